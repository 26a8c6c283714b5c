// SPDX-License-Identifier: GPL-2.0

//! `/dev/ioasid`: the IOMMU user API in Rust, on the iommufd ABI.
//!
//! `/dev/ioasid` is a misc device that speaks the ABI of iommufd, `include/uapi/linux/iommufd.h`:
//! the ioctl type (`';'`), ioctl numbers, struct layouts and error codes of `/dev/iommu`, so that
//! iommufd clients run unchanged against it. It shares no code or state with iommufd
//! (`drivers/iommu/iommufd/`), but follows it closely; the C names below refer to it.
//!
//! # Design
//!
//! Each open file has a context, [`IoasidCtx`] (iommufd's `struct iommufd_ctx`), holding a table
//! of objects that userspace names by id. The kinds of object are the variants of
//! [`object::Object`]: IO address spaces (IOAS), paging hardware page tables (HWPT, an IOMMU
//! domain that maps what its IOAS maps, see [`hwpt`]) and VFIO devices bound to the file (see
//! [`device`], which also explains when KVM is told that a device's DMA is not coherent).
//!
//! An ioctl is dispatched like `iommufd_fops_ioctl()` does it:
//!
//! 1. A command number (`_IOC_NR()`) outside iommufd's command table fails with `ENOTTY` without
//!    touching user memory.
//! 2. The `size` member of the command struct is read, which fails with `EFAULT` if the argument
//!    does not point to user memory.
//! 3. An ioctl number that is not one of the implemented iommufd ioctls fails with `ENOTTY`.
//! 4. The command struct is copied in by the extensible-struct rules of `copy_struct_from_user()`
//!    (see [`ucmd`]): a `size` below the struct's first version fails with `EINVAL`, a larger
//!    struct than the kernel knows fails with `E2BIG` unless the excess bytes are zero.
//! 5. The command runs. Flags and reserved fields it does not know fail with `EOPNOTSUPP`.
//!
//! The object table, [`object::ObjectTable`], keeps the objects in a red-black tree by id and
//! allocates ids from an [`IdPool`](kernel::id_pool::IdPool), lowest free id first and starting
//! at 1, which are the ids iommufd's `xa_alloc()` hands out. A [`Mutex`] per file protects it.
//! An IOAS is reference counted: an ioctl takes a reference under the table lock and works on the
//! IOAS without it.
//!
//! An IOAS ([`ioas::Ioas`], iommufd's `struct iommufd_ioas` with its `struct io_pagetable`) is a
//! set of disjoint areas ([`ioas::Area`], `struct iopt_area`), each mapping a range of IOVA to a
//! slice of a range of pinned user memory ([`pages::Pages`], `struct iopt_pages`). The areas are
//! kept in a red-black tree by first IOVA, under a [`Mutex`] per IOAS (iommufd's `iova_rwsem`);
//! since they are disjoint, the area that intersects a range is found by looking at the areas
//! on either side of its start.
//!
//! # Pinning and accounting
//!
//! `IOMMU_IOAS_MAP` pins the user memory it maps with `FOLL_LONGTERM` (and `FOLL_WRITE` for a
//! writable mapping), in batches, into a [`pages::Pages`]; `IOMMU_IOAS_MAP_FILE` pins the pages
//! of a memfd with `memfd_pin_folios()`, one pin per page all the same. `IOMMU_IOAS_COPY` does
//! not pin anything: the new areas share the [`pages::Pages`] of the source areas, by reference.
//! The pages are unpinned when the last area that uses them goes: on `IOMMU_IOAS_UNMAP`, on
//! `IOMMU_DESTROY` of the IOAS, or when the file is closed.
//!
//! Pinned memory is charged against `RLIMIT_MEMLOCK` like iommufd's default mode
//! (`IOPT_PAGES_ACCOUNT_USER`): to the `locked_vm` of the user, checked against the limit of the
//! mapping task, and not at all for a task with `CAP_IPC_LOCK`. `IOMMU_OPTION_RLIMIT_MODE`
//! selects the VFIO-compatible mode (`IOPT_PAGES_ACCOUNT_MM`), where the `locked_vm` of the mm
//! is charged instead. A charge beyond the limit fails the map with `ENOMEM`.
//!
//! Unlike VFIO type1, which charges a page once per container that maps it, and iommufd, which
//! charges once per `struct iopt_pages`, `/dev/ioasid` charges a page **once per file**, however
//! many IOASes and mappings of the file pin it. Each file has a table of its pinned pages,
//! [`pages::PinAccount`], in runs of consecutive page frame numbers, each with the number of
//! [`pages::Pages`] of the file that pin its pages. Runs keep memory backed by huge pages (or
//! otherwise physically contiguous) at a node per run rather than per page:
//!
//! - When a [`pages::Pages`] is created, its pfns are turned into runs; the pages of the runs
//!   that are not in the table yet are charged, all at once, and entered with a count of 1; the
//!   counts of the others go up. Runs of the table are split where the new runs start and end,
//!   so that each [`pages::Pages`] covers whole runs. If the charge fails, nothing is entered
//!   and the pages are unpinned. A [`pages::Pages`] of one run none of whose pages is in the
//!   table, what a small mapping is, takes one lookup and one node.
//! - When a [`pages::Pages`] is dropped, the counts of the runs it covers go down, with no split
//!   and so no allocation; the runs that reach 0 are removed and uncharged, then the pages are
//!   unpinned.
//!
//! Invariants:
//!
//! - The runs of the table cover exactly the pages some live [`pages::Pages`] of the file has
//!   pinned, counting the [`pages::Pages`] that pin them. A page that a [`pages::Pages`] pinned
//!   twice (mapped at two addresses of the range) counts once for it.
//! - The charge of the file, in the user's or the mm's `locked_vm`, equals the number of pages in
//!   the table that were charged (all but those first pinned by a task with `CAP_IPC_LOCK`), and
//!   the `pinned_vm` (`VmPin`) of the mm of the opener counts every page of the table, as iommufd
//!   counts every pinned page there. Both drop back to what they were when the file releases
//!   all its pages.
//! - The accounting mode only changes while the file has no pinned pages and no objects.
//! - Each pinned page holds one `FOLL_PIN` reference each time a [`pages::Pages`] pinned it; the
//!   table only decides what is charged, never what is pinned.
//! - Locks nest in this order: the attachment of a device, the object table, an IOAS, the table
//!   of pinned pages. Nothing takes a lock of this list with a later one held.
//! - Every area of an IOAS is mapped in every IOMMU domain of the IOAS (one per HWPT), with
//!   `IOMMU_CACHE`; a domain's mappings of an area hold a reference to its [`pages::Pages`], and
//!   so to the pins, and are dropped, which unmaps them and flushes the IOTLB, before the pages
//!   can be unpinned.
//!
//! The charge goes to the user and the mm of the task that opened the file, whoever maps: the
//! charge of a page must be undone where it was made, and one page may be pinned by mappings made
//! by several tasks sharing the file.
//!
//! # Invariants
//!
//! - The table lock is held only to look up, insert or remove objects: never across a user memory
//!   access, and never while an object is torn down.
//! - An object is created in two steps, as in iommufd: [`object::NewObject`] allocates its id, the
//!   ioctl does its fallible work (such as writing the id back to userspace) without the lock,
//!   then [`object::NewObject::finalize`], which cannot fail, publishes the object. Until then the
//!   id is taken but lookups, `IOMMU_DESTROY` and fdinfo do not see it; if the ioctl fails, the id
//!   is freed again.
//! - `IOMMU_DESTROY` fails with `ENOENT` if there is no published object with the id, and with
//!   `EBUSY` for an object others use, as in `iommufd_object_remove()`: an IOAS with HWPTs, a
//!   HWPT with devices attached (counted under the table lock), and a device, which only its
//!   unbinding removes.
//! - Objects hold references to what they use (a HWPT its IOAS, a device its HWPT), so closing
//!   the file, which can only happen once vfio has unbound every device of the file, tears the
//!   rest down in any order.
//!
//! # fdinfo
//!
//! `/proc/<pid>/fdinfo/<fd>` of a `/dev/ioasid` file has, after the generic lines, three lines
//! on the pinned memory of the file, then one line per published object, in ascending order of
//! id, each followed by a line on the HWPT or device, or by the lines of the areas of the IOAS,
//! in ascending order of IOVA:
//!
//! ```text
//! ioasid-account-mode:\t<mode>
//! ioasid-pinned-pages:\t<pages>
//! ioasid-charged-pages:\t<pages>
//! ioasid-object:\t<id> <kind>
//! ioasid-area:\t<id> <iova> <length> <prot>
//! ioasid-hwpt:\t<id> <origin> <coherency>
//! ioasid-device:\t<id> <hwpt>
//! ```
//!
//! - `ioasid-account-mode`: where pinned pages are charged: `user` for the `locked_vm` of the
//!   user (`IOMMU_OPTION_RLIMIT_MODE` 0, the default), `mm` for that of the mm (1).
//! - `ioasid-pinned-pages`: the number of distinct pages the file has pinned, in decimal: a page
//!   mapped in several IOASes, or several times, counts once.
//! - `ioasid-charged-pages`: how many of them are charged to `RLIMIT_MEMLOCK`, in decimal: all
//!   but those first pinned by a task with `CAP_IPC_LOCK`.
//! - `ioasid-object`: `<id>` is the object id in decimal, `<kind>` the name of iommufd's
//!   `IOMMUFD_OBJ_*` type of the object in lower case: `ioas`, `hwpt_paging` or `device`.
//! - `ioasid-area`: an area of the IOAS `<id>` (decimal): its first IOVA and its length in bytes,
//!   in hexadecimal with a `0x` prefix, and `<prot>`, `r` or `-` then `w` or `-`, for
//!   `IOMMU_IOAS_MAP_READABLE` and `IOMMU_IOAS_MAP_WRITEABLE`.
//! - `ioasid-hwpt`: the HWPT `<id>`: `<origin>` is `auto` for one made by attaching a device to
//!   an IOAS; `<coherency>` is `coherent` if its IOMMU domain enforces cache coherency (no-snoop
//!   DMA is snooped all the same), else `noncoherent`.
//! - `ioasid-device`: the device `<id>` and the id of the HWPT it is attached to, 0 for none.
//!
//! Parsers should skip kinds and keys they do not know, as more will come.
//!
//! # Differences from iommufd
//!
//! - Implemented are `IOMMU_DESTROY`, `IOMMU_GET_HW_INFO` (no PASID capabilities: PASIDs are
//!   not supported), `IOMMU_HWPT_ALLOC` (paging HWPTs without flags or driver data),
//!   `IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP`,
//!   `IOMMU_IOAS_MAP_FILE`, `IOMMU_IOAS_UNMAP`, `IOMMU_IOAS_COPY`, `IOMMU_IOAS_IOVA_RANGES`,
//!   `IOMMU_IOAS_ALLOW_IOVAS` and `IOMMU_OPTION` (`IOMMU_OPTION_RLIMIT_MODE`,
//!   `IOMMU_OPTION_HUGE_PAGES`). The other iommufd ioctls fail with `ENOTTY` (after step 2
//!   above).
//! - `IOMMU_IOAS_MAP_FILE` maps memfds (shmem and hugetlbfs) only; a dma-buf, which iommufd maps
//!   for the VFIO devices that export one, fails with `EINVAL` like any other file.
//! - VFIO devices bind through vfio's IOMMU provider registry, one device per IOMMU group.
//!   Nesting, dirty tracking and PASIDs are not implemented.
//!   An automatic HWPT is shared only by devices of the same coherency: iommufd also puts a
//!   device whose IOMMU could enforce coherency on a HWPT that does not.
//! - The IOVA alignment of an IOAS is `PAGE_SIZE`, as that of an iommufd IOAS with an IOMMU
//!   domain attached (1 with nothing attached): IOVAs, lengths and user addresses are whole
//!   pages.
//! - `IOMMU_IOAS_MAP` pins and charges the memory at once, where iommufd pins only once an
//!   IOMMU domain or an in-kernel access needs the pages. So a map of memory that is not mapped
//!   (or not writable, for a writable map) fails with `EFAULT`, and one beyond `RLIMIT_MEMLOCK`
//!   with `ENOMEM`, where iommufd would only fail at attach.
//! - Pages are charged once per file (see above), and to the opener of the file.
//! - `IOMMU_DESTROY` of an IOAS that another ioctl is using succeeds, and the IOAS is torn down
//!   when that ioctl is done, where iommufd may fail with `EBUSY`.
//! - The VFIO type1 container ioctls that iommufd also answers on `/dev/iommu` (for its
//!   `/dev/vfio/vfio` emulation) fail with `ENOTTY`.
//! - Like `/dev/iommu`, the device has no 32-bit compat ioctl handler: ioctls of 32-bit processes
//!   on a 64-bit kernel fail with `ENOTTY`.

use core::ops::RangeInclusive;
use kernel::{
    alloc::KVVec,
    device::Device,
    fs::File,
    ioctl::{
        _IO,
        _IOC_NR, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        Arc,
        ArcBorrow,
        Mutex, //
    },
    uapi,
    vfio::{
        IommuProvider,
        ProviderRegistration, //
    },
};

use object::{
    Object,
    ObjectTable, //
};
use pages::PinAccount;
use ucmd::{
    IommuDestroy,
    Ucmd, //
};

mod device;
mod hwpt;
mod ioas;
mod object;
mod pages;
mod test;
mod ucmd;

module! {
    type: IoasidModule,
    name: "ioasid",
    description: "IOASID: Rust /dev/ioasid on the iommufd ABI",
    license: "GPL",
}

/// The command numbers (`_IOC_NR()`) of iommufd's command table, from `IOMMUFD_CMD_BASE` to the
/// last `IOMMUFD_CMD_*` of `include/uapi/linux/iommufd.h`: see step 1 of the dispatch.
const IOMMUFD_CMD_NRS: RangeInclusive<u32> =
    uapi::IOMMUFD_CMD_BASE..=uapi::IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA;

/// `IOMMU_DESTROY` of `include/uapi/linux/iommufd.h`.
const IOMMU_DESTROY: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_DESTROY);

/// `IOMMU_GET_HW_INFO` of `include/uapi/linux/iommufd.h`.
const IOMMU_GET_HW_INFO: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_GET_HW_INFO);

/// `IOMMU_HWPT_ALLOC` of `include/uapi/linux/iommufd.h`.
const IOMMU_HWPT_ALLOC: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_HWPT_ALLOC);

/// `IOMMU_IOAS_ALLOC` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_ALLOC: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_ALLOC);

/// `IOMMU_IOAS_ALLOW_IOVAS` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_ALLOW_IOVAS: u32 = _IO(
    uapi::IOMMUFD_TYPE as u32,
    uapi::IOMMUFD_CMD_IOAS_ALLOW_IOVAS,
);

/// `IOMMU_IOAS_COPY` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_COPY: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_COPY);

/// `IOMMU_IOAS_IOVA_RANGES` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_IOVA_RANGES: u32 = _IO(
    uapi::IOMMUFD_TYPE as u32,
    uapi::IOMMUFD_CMD_IOAS_IOVA_RANGES,
);

/// `IOMMU_IOAS_MAP` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_MAP: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_MAP);

/// `IOMMU_IOAS_MAP_FILE` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_MAP_FILE: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_MAP_FILE);

/// `IOMMU_IOAS_UNMAP` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_UNMAP: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_UNMAP);

/// `IOMMU_OPTION` of `include/uapi/linux/iommufd.h`.
const IOMMU_OPTION: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_OPTION);

#[pin_data]
struct IoasidModule {
    /// Lets VFIO device cdevs bind to the files of `miscdev`. Declared first, so that it is
    /// unregistered first.
    provider: Option<Pin<KBox<ProviderRegistration<IoasidCtx>>>>,
    #[pin]
    miscdev: MiscDeviceRegistration<IoasidCtx>,
    /// The test hooks of `CONFIG_IOASID_TEST`, nothing without it.
    #[pin]
    test_hooks: test::TestHooks,
}

impl kernel::InPlaceModule for IoasidModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"ioasid" }),
            provider: None,
            test_hooks <- test::TestHooks::new(),
        })
        .pin_chain(|module| {
            // The provider is registered for the files of the registered misc device.
            let module = module.project();
            *module.provider = Some(KBox::pin_init(
                ProviderRegistration::register(&module.miscdev),
                GFP_KERNEL,
            )?);
            Ok(())
        })
    }
}

/// The context of an open `/dev/ioasid` file, the analogue of iommufd's `struct iommufd_ctx`.
#[pin_data]
pub(crate) struct IoasidCtx {
    /// The objects of this file.
    #[pin]
    pub(crate) objects: Mutex<ObjectTable>,
    /// The pages pinned by the mappings of this file, and their accounting.
    pub(crate) account: Arc<PinAccount>,
}

impl IoasidCtx {
    /// Dispatches the ioctl `cmd` with argument `arg`, like `iommufd_fops_ioctl()`.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result {
        if !IOMMUFD_CMD_NRS.contains(&_IOC_NR(cmd)) {
            return Err(ENOTTY);
        }

        let user_size = ucmd::read_user_size(arg)?;
        match cmd {
            IOMMU_DESTROY => self.destroy(Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_GET_HW_INFO => device::get_hw_info(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_HWPT_ALLOC => hwpt::alloc(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_IOAS_ALLOC => ioas::alloc(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_IOAS_ALLOW_IOVAS => {
                ioas::allow_iovas(self, Ucmd::copy_from_user(arg, user_size)?)
            }
            IOMMU_IOAS_COPY => ioas::copy(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_IOAS_IOVA_RANGES => {
                ioas::iova_ranges(self, Ucmd::copy_from_user(arg, user_size)?)
            }
            IOMMU_IOAS_MAP => ioas::map(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_IOAS_MAP_FILE => ioas::map_file(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_IOAS_UNMAP => ioas::unmap(self, Ucmd::copy_from_user(arg, user_size)?),
            IOMMU_OPTION => ioas::option(self, Ucmd::copy_from_user(arg, user_size)?),
            _ => Err(ENOTTY),
        }
    }

    /// `IOMMU_DESTROY`: destroys the object `id`, like `iommufd_destroy()`.
    fn destroy(&self, ucmd: Ucmd<IommuDestroy>) -> Result {
        // The lock guard is dropped at the end of the statement, so the object is torn down
        // without the table lock held when `_object` goes out of scope.
        let _object = self.objects.lock().remove(ucmd.cmd.id)?;
        Ok(())
    }
}

impl IommuProvider for IoasidCtx {
    type Binding = device::Binding;

    fn bind(ctx: ArcBorrow<'_, IoasidCtx>, dev: &Device) -> Result<(KBox<Self::Binding>, u32)> {
        device::bind(ctx.into(), dev)
    }

    fn attach(binding: &Self::Binding, pt_id: &mut u32) -> Result {
        binding.attach(pt_id)
    }

    fn detach(binding: &Self::Binding) {
        binding.detach()
    }

    fn enforced_coherent(binding: &Self::Binding) -> bool {
        binding.enforced_coherent()
    }
}

#[vtable]
impl MiscDevice for IoasidCtx {
    // Reference counted: a bound VFIO device holds the context of its file.
    type Ptr = Arc<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        // Charged to the opener, like all memory a file holds for its objects.
        let account = PinAccount::new()?;
        Arc::pin_init(
            try_pin_init!(IoasidCtx {
                objects <- new_mutex!(ObjectTable::new()),
                account,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    fn ioctl(ctx: ArcBorrow<'_, IoasidCtx>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ctx.ioctl(cmd, arg)?;
        Ok(0)
    }

    // iommufd has no compat_ioctl handler; without this one, the miscdevice abstraction would
    // install `compat_ptr_ioctl()` and let 32-bit processes in.
    #[cfg(CONFIG_COMPAT)]
    fn compat_ioctl(
        _ctx: ArcBorrow<'_, IoasidCtx>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        Err(ENOTTY)
    }

    fn show_fdinfo(ctx: ArcBorrow<'_, IoasidCtx>, m: &SeqFile, _file: &File) {
        // The format is documented at the top of this file.
        let stats = ctx.account.stats();
        seq_print!(m, "ioasid-account-mode:\t{}\n", stats.mode.name());
        seq_print!(m, "ioasid-pinned-pages:\t{}\n", stats.pinned);
        seq_print!(m, "ioasid-charged-pages:\t{}\n", stats.charged);

        // The objects are locked without the table lock held, from references taken under it.
        let mut objects = KVVec::new();
        for (&id, object) in ctx.objects.lock().iter() {
            let object = match object {
                Object::Ioas(ioas) => Object::Ioas(ioas.clone()),
                Object::HwptPaging(hwpt) => Object::HwptPaging(hwpt.clone()),
                Object::Device(device) => Object::Device(device.clone()),
            };
            if objects.push((id, object), GFP_KERNEL).is_err() {
                break;
            }
        }
        for (id, object) in &objects {
            seq_print!(m, "ioasid-object:\t{} {}\n", id, object.kind_name());
            let ioas = match object {
                Object::Ioas(ioas) => ioas,
                Object::HwptPaging(hwpt) => {
                    seq_print!(
                        m,
                        "ioasid-hwpt:\t{} {} {}\n",
                        id,
                        if hwpt.is_auto() { "auto" } else { "user" },
                        if hwpt.domain().enforces_coherency() {
                            "coherent"
                        } else {
                            "noncoherent"
                        }
                    );
                    continue;
                }
                Object::Device(device) => {
                    seq_print!(
                        m,
                        "ioasid-device:\t{} {}\n",
                        id,
                        device.attached_hwpt().unwrap_or(0)
                    );
                    continue;
                }
            };
            ioas.for_each_area(|area| {
                seq_print!(
                    m,
                    "ioasid-area:\t{} {:#x} {:#x} {}{}\n",
                    id,
                    area.iova,
                    area.length,
                    if area.readable { 'r' } else { '-' },
                    if area.writable { 'w' } else { '-' }
                );
            });
        }
    }
}
