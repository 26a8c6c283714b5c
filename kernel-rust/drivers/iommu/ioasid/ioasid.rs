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
//! [`object::Object`]: IO address spaces (IOAS) so far, with hardware page tables and devices to
//! follow.
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
//! - `IOMMU_DESTROY` destroys an object of any kind, and fails with `ENOENT` if there is no
//!   published object with the id. Once objects refer to each other (a page table to its IOAS, a
//!   device to its page table), a referenced object will count its users and refuse destruction
//!   with `EBUSY`, as in `iommufd_object_remove()`; today no object refers to another.
//! - Closing the file destroys the objects left in the table. When objects refer to each other,
//!   this will have to go leaves first, as in `iommufd_fops_release()`.
//!
//! # fdinfo
//!
//! `/proc/<pid>/fdinfo/<fd>` of a `/dev/ioasid` file has, after the generic lines, one line per
//! published object, in ascending order of id:
//!
//! ```text
//! ioasid-object:\t<id> <kind>
//! ```
//!
//! `<id>` is the object id in decimal, `<kind>` the name of iommufd's `IOMMUFD_OBJ_*` type of the
//! object in lower case: `ioas` is the only kind so far. Parsers should skip kinds and keys they do
//! not know, as more will come.
//!
//! # Differences from iommufd
//!
//! - Only `IOMMU_DESTROY` and `IOMMU_IOAS_ALLOC` are implemented so far. The other iommufd ioctls
//!   fail with `ENOTTY` (after step 2 above).
//! - The VFIO type1 container ioctls that iommufd also answers on `/dev/iommu` (for its
//!   `/dev/vfio/vfio` emulation) fail with `ENOTTY`.
//! - Like `/dev/iommu`, the device has no 32-bit compat ioctl handler: ioctls of 32-bit processes
//!   on a 64-bit kernel fail with `ENOTTY`.

use core::ops::RangeInclusive;
use kernel::{
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
    sync::Mutex,
    uapi,
};

use object::ObjectTable;
use ucmd::{
    IommuDestroy,
    Ucmd, //
};

mod ioas;
mod object;
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

/// `IOMMU_IOAS_ALLOC` of `include/uapi/linux/iommufd.h`.
const IOMMU_IOAS_ALLOC: u32 = _IO(uapi::IOMMUFD_TYPE as u32, uapi::IOMMUFD_CMD_IOAS_ALLOC);

#[pin_data]
struct IoasidModule {
    #[pin]
    _miscdev: MiscDeviceRegistration<IoasidCtx>,
}

impl kernel::InPlaceModule for IoasidModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"ioasid" }),
        })
    }
}

/// The context of an open `/dev/ioasid` file, the analogue of iommufd's `struct iommufd_ctx`.
#[pin_data]
pub(crate) struct IoasidCtx {
    /// The objects of this file.
    #[pin]
    pub(crate) objects: Mutex<ObjectTable>,
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
            IOMMU_IOAS_ALLOC => ioas::alloc(self, Ucmd::copy_from_user(arg, user_size)?),
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

#[vtable]
impl MiscDevice for IoasidCtx {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        // Charged to the opener, like all memory a file holds for its objects.
        KBox::pin_init(
            try_pin_init!(IoasidCtx {
                objects <- new_mutex!(ObjectTable::new()),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    fn ioctl(ctx: Pin<&IoasidCtx>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ctx.ioctl(cmd, arg)?;
        Ok(0)
    }

    // iommufd has no compat_ioctl handler; without this one, the miscdevice abstraction would
    // install `compat_ptr_ioctl()` and let 32-bit processes in.
    #[cfg(CONFIG_COMPAT)]
    fn compat_ioctl(_ctx: Pin<&IoasidCtx>, _file: &File, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    fn show_fdinfo(ctx: Pin<&IoasidCtx>, m: &SeqFile, _file: &File) {
        // The format is documented at the top of this file.
        for (id, object) in ctx.objects.lock().iter() {
            seq_print!(m, "ioasid-object:\t{} {}\n", id, object.kind_name());
        }
    }
}
