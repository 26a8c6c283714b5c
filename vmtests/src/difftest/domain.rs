//! `--mainline-domain`: give every IOAS of the reference (mainline) side a
//! real IOMMU domain, so that mainline pins at map time like `/dev/ioasid`.
//!
//! # Why a domain, and how
//!
//! Mainline iommufd pins user pages only for the domains attached to an
//! IOAS (iopt_table_add_domain() fills a new domain with every existing
//! area, iopt_fill_domains_pages() fills every domain at IOAS_MAP/COPY time,
//! iopt_table_remove_domain() unpins when the last one goes). `/dev/ioasid`
//! has no devices and pins at map time unconditionally (`pins_at_map` in the
//! selftests). Like with like is therefore "mainline with a domain on
//! *every* IOAS the sequence allocates, for the IOAS's whole life".
//!
//! Attaching the one edu device (VFIO_DEVICE_ATTACH_IOMMUFD_PT) gives a
//! domain to one IOAS at a time only, and moving the device unpins the IOAS
//! it leaves — sequences with several IOASes (COPY between two of them) would
//! then compare pinning IOASes against non-pinning ones. Instead the edu
//! device is only *bound* (VFIO_DEVICE_BIND_IOMMUFD) and every IOAS gets its
//! own kernel-managed HWPT from `IOMMU_HWPT_ALLOC(dev_id, ioas)`:
//! iommufd_hwpt_paging_alloc() without immediate_attach allocates the
//! device's paging domain and calls iopt_table_add_domain() on the IOAS,
//! exactly what an attach does for the pinning, without attaching anything.
//! So every IOAS, and so every COPY source and destination, pins from its
//! IOAS_ALLOC to its DESTROY. [`Shadowed`] does this inside the reference
//! device's ioctl so that VmPin/VmLck deltas are measured around it:
//!
//! * IOAS_ALLOC: on success, the device is bound if it is not (the first
//!   IOAS), then HWPT_ALLOC for the new IOAS (nothing to pin yet).
//! * DESTROY of an IOAS: destroy its HWPT first (mainline refuses to destroy
//!   an IOAS a HWPT uses: EBUSY), then the IOAS; the unpinning happens inside
//!   the measured window, as on `/dev/ioasid`. If the destroy fails the HWPT
//!   is re-created (re-pinning: net VmPin delta 0). When it was the last
//!   IOAS, the device is unbound (its VFIO cdev closed), still inside the
//!   window (unbinding pins and unpins nothing).
//! * Closing: HWPTs destroyed, the device unbound (it holds a reference on
//!   the iommufd file), then the iommufd closed.
//!
//! The device is bound lazily, exactly while the sequence has IOASes, so
//! that mainline's object table is empty exactly when the sequence's is:
//! IOMMU_OPTION RLIMIT_MODE SET answers EBUSY while any object exists
//! (iommufd_option_rlimit_mode()), and a device bound for the whole life of
//! the file would make it EBUSY always.
//!
//! # Object ids
//!
//! The bound device and the HWPTs are iommufd objects and take ids from the
//! same allocator as IOASes, so mainline's IOAS ids shift. [`Shadowed`]
//! presents *virtual* ids: each IOAS gets the lowest free id >= 1 among the
//! live IOASes — the id mainline itself hands out when IOASes are its only
//! objects (xa_alloc with XA_FLAGS_ALLOC1) — and every id field of the
//! IOAS ioctls (and IOMMU_OPTION's object_id, 0 staying 0) is translated in
//! the argument and restored in the written-back structure. An id that is no
//! live IOAS is sent as [`DEAD_ID`] (never allocated), so it can never hit
//! the device or a HWPT. In this mode the ids are therefore compared against
//! that rule rather than against mainline's allocator directly; the run
//! without a domain (scenario `difftest-alloc-destroy`, which has no pinning
//! ops) still compares them against mainline itself.
//!
//! # What a domain changes beyond pinning (domain-only semantics)
//!
//! * The domain's aperture: iopt_table_add_domain() reserves the IOVA outside
//!   `[aperture_start, aperture_end]` (with intel-iommu everything above
//!   2^aw - 1). `/dev/ioasid` has no aperture. The usable window is probed
//!   once per run (IOVA_RANGES of a fresh IOAS with a HWPT) and
//!   - IOVA_RANGES: the test device's written ranges are clipped to the
//!     window before comparing (its expected answer is mainline's with the
//!     domain's aperture removed);
//!   - FIXED_IOVA maps/copies and ALLOW_IOVAS ranges reaching outside the
//!     window are not issued (on either device): mainline refuses them for
//!     the domain's sake, `/dev/ioasid` rightly accepts them. Ranges whose
//!     end overflows are still issued (both fail with EOVERFLOW first).
//! * IOMMU_OPTION_HUGE_PAGES set to 0 on an IOAS with areas:
//!   iopt_disable_large_pages() fails with EINVAL while a domain is attached
//!   and areas exist (the domain may already hold large IOPTEs);
//!   `/dev/ioasid` has no page tables and accepts it. Not issued when the
//!   model says the IOAS has areas.
//! * Reserved regions of the *device* (the MSI window 0xfee00000-0xfeefffff
//!   with intel-iommu) are added only by an attach
//!   (iopt_table_enforce_dev_resv_regions()), not by HWPT_ALLOC: they do not
//!   show up here.
//!
//! Skipped calls are counted and listed with `--verbose`.

use super::call::{Call, Cmd, Id};
use super::exec::Device;
use super::model::Model;
use crate::sysfs;
use crate::vfio::VfioDevice;
use anyhow::{Context, Result, bail, ensure};
use ioasid_uapi::Iommufd;
use ioasid_uapi::iommufd::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::mem::offset_of;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The real id sent for a virtual id that is no live IOAS.
pub const DEAD_ID: u32 = 0x7fff_fff2;

/// Virtual IOAS id -> (real IOAS id, real HWPT id).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdMap {
    live: BTreeMap<u32, (u32, u32)>,
}

impl IdMap {
    /// The id mainline would hand out if IOASes were its only objects.
    pub fn next_virtual(&self) -> u32 {
        (1..).find(|v| !self.live.contains_key(v)).unwrap_or(1)
    }

    /// The real id to send for virtual id `v`.
    pub fn real(&self, v: u32) -> u32 {
        match v {
            0 => 0,
            _ => self.live.get(&v).map_or(DEAD_ID, |p| p.0),
        }
    }

    pub fn hwpt(&self, v: u32) -> Option<u32> {
        self.live.get(&v).map(|p| p.1)
    }

    pub fn insert(&mut self, v: u32, real: u32, hwpt: u32) {
        self.live.insert(v, (real, hwpt));
    }

    pub fn remove(&mut self, v: u32) -> Option<(u32, u32)> {
        self.live.remove(&v)
    }

    pub fn hwpts(&self) -> Vec<u32> {
        self.live.values().map(|p| p.1).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// Offsets of the input id fields of ioctl `nr` (not IOAS_ALLOC's output).
pub fn id_fields(nr: u32) -> &'static [usize] {
    const D: [usize; 1] = [offset_of!(IommuDestroy, id)];
    const R: [usize; 1] = [offset_of!(IommuIoasIovaRanges, ioas_id)];
    const A: [usize; 1] = [offset_of!(IommuIoasAllowIovas, ioas_id)];
    const M: [usize; 1] = [offset_of!(IommuIoasMap, ioas_id)];
    const F: [usize; 1] = [offset_of!(IommuIoasMapFile, ioas_id)];
    const U: [usize; 1] = [offset_of!(IommuIoasUnmap, ioas_id)];
    const C: [usize; 2] = [
        offset_of!(IommuIoasCopy, dst_ioas_id),
        offset_of!(IommuIoasCopy, src_ioas_id),
    ];
    const O: [usize; 1] = [offset_of!(IommuOption, object_id)];
    match nr {
        IOMMU_DESTROY => &D,
        IOMMU_IOAS_IOVA_RANGES => &R,
        IOMMU_IOAS_ALLOW_IOVAS => &A,
        IOMMU_IOAS_MAP => &M,
        IOMMU_IOAS_MAP_FILE => &F,
        IOMMU_IOAS_UNMAP => &U,
        IOMMU_IOAS_COPY => &C,
        IOMMU_OPTION => &O,
        _ => &[],
    }
}

fn get_u32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn put_u32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

fn other(msg: String) -> std::io::Error {
    // No raw_os_error: execute() turns it into a run error, not an errno.
    std::io::Error::other(msg)
}

/// Binds the device to the reference iommufd: its dev_id and what keeps it
/// bound (dropping it unbinds: closing the VFIO cdev).
pub type Binder = Box<dyn Fn() -> Result<(u32, Box<dyn std::any::Any>)>>;

/// The reference device with a HWPT (domain) on every IOAS, ids virtualised,
/// the device bound exactly while an IOAS exists.
pub struct Shadowed {
    inner: Box<dyn Device>,
    bind: Binder,
    /// (dev_id, binding) while bound.
    bound: RefCell<Option<(u32, Box<dyn std::any::Any>)>>,
    ids: RefCell<IdMap>,
}

impl Shadowed {
    /// `inner` is an iommufd; `bind` binds the device to it (at the first
    /// IOAS_ALLOC; the binding is dropped when the last IOAS is destroyed).
    pub fn new(inner: Box<dyn Device>, bind: Binder) -> Self {
        Self {
            inner,
            bind,
            bound: RefCell::default(),
            ids: RefCell::default(),
        }
    }

    fn raw<T: Copy>(&self, nr: u32, cmd: &mut T) -> std::io::Result<libc::c_int> {
        let n = std::mem::size_of::<T>();
        // SAFETY: T is a plain repr(C) ioctl structure of n bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut((cmd as *mut T).cast::<u8>(), n) };
        // SAFETY: the structures used here (HWPT_ALLOC without data, DESTROY)
        // carry no user pointers.
        unsafe { self.inner.ioctl_raw(nr, buf) }
    }

    /// The dev_id of the device, binding it first if it is not bound.
    fn dev_id(&self) -> std::io::Result<u32> {
        if let Some((id, _)) = &*self.bound.borrow() {
            return Ok(*id);
        }
        let (id, binding) = (self.bind)()
            .map_err(|e| other(format!("binding the device for the mainline domain: {e:#}")))?;
        *self.bound.borrow_mut() = Some((id, binding));
        Ok(id)
    }

    fn hwpt_alloc(&self, ioas: u32) -> std::io::Result<u32> {
        let dev_id = self.dev_id()?;
        let mut c = IommuHwptAlloc::new();
        c.dev_id = dev_id;
        c.pt_id = ioas;
        c.data_type = IOMMU_HWPT_DATA_NONE;
        self.raw(IOMMU_HWPT_ALLOC, &mut c).map_err(|e| {
            other(format!(
                "IOMMU_HWPT_ALLOC(dev {dev_id}, ioas {ioas}) for the mainline domain: {e}"
            ))
        })?;
        Ok(c.out_hwpt_id)
    }

    fn destroy_real(&self, id: u32) -> std::io::Result<()> {
        let mut c = IommuDestroy::new();
        c.id = id;
        self.raw(IOMMU_DESTROY, &mut c).map(drop)
    }

    /// Unbind the device when no IOAS is left (mainline's object table is
    /// then empty, as the sequence's is).
    fn unbind_if_idle(&self) {
        if self.ids.borrow().is_empty() {
            drop(self.bound.borrow_mut().take());
        }
    }

    /// Snapshot of the id map (tests).
    pub fn id_map(&self) -> IdMap {
        self.ids.borrow().clone()
    }

    /// Is the device bound now? (tests)
    pub fn is_bound(&self) -> bool {
        self.bound.borrow().is_some()
    }
}

impl Device for Shadowed {
    unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int> {
        let fields = id_fields(nr);
        let orig: Vec<(usize, u32)> = fields
            .iter()
            .filter_map(|&o| get_u32(buf, o).map(|v| (o, v)))
            .collect();
        {
            let ids = self.ids.borrow();
            for &(o, v) in &orig {
                put_u32(buf, o, ids.real(v));
            }
        }
        // DESTROY of a live IOAS: its HWPT goes first (inside the caller's
        // measured window).
        let destroyed = if nr == IOMMU_DESTROY {
            let v = orig.first().map_or(0, |p| p.1);
            let hwpt = self.ids.borrow().hwpt(v);
            if let Some(h) = hwpt {
                self.destroy_real(h)
                    .map_err(|e| other(format!("IOMMU_DESTROY of the shadow HWPT {h}: {e}")))?;
            }
            hwpt.map(|_| v)
        } else {
            None
        };
        // SAFETY: forwarded to the caller; only id fields were changed.
        let r = unsafe { self.inner.ioctl_raw(nr, buf) };
        // Restore the virtual ids (the kernel echoes the struct back).
        for &(o, v) in &orig {
            put_u32(buf, o, v);
        }
        if let Some(v) = destroyed {
            if r.is_ok() {
                self.ids.borrow_mut().remove(v);
                self.unbind_if_idle();
            } else {
                let real = self.ids.borrow().real(v);
                let h = self.hwpt_alloc(real)?;
                self.ids.borrow_mut().insert(v, real, h);
            }
        }
        if nr == IOMMU_IOAS_ALLOC && r.is_ok() {
            let o = offset_of!(IommuIoasAlloc, out_ioas_id);
            let real = get_u32(buf, o).ok_or_else(|| other("IOAS_ALLOC: short buffer".into()))?;
            let h = self.hwpt_alloc(real)?;
            let mut ids = self.ids.borrow_mut();
            let v = ids.next_virtual();
            ids.insert(v, real, h);
            put_u32(buf, o, v);
        }
        r
    }
}

impl Drop for Shadowed {
    fn drop(&mut self) {
        for h in self.ids.borrow().hwpts() {
            let _ = self.destroy_real(h);
        }
        // Unbind the device before the iommufd closes (the binding holds a
        // reference on the iommufd file).
        drop(self.bound.borrow_mut().take());
    }
}

/// Open `reference`; the edu device's VFIO cdev `cdev` is bound to it
/// while it has IOASes ([`Shadowed`]).
pub fn open_shadowed(reference: &Path, cdev: &Path) -> Result<Box<dyn Device>> {
    let fd =
        Iommufd::open(reference).with_context(|| format!("cannot open {}", reference.display()))?;
    // The binder's own reference to the iommufd file: dropped with the
    // Shadowed, after the device is unbound.
    let bind_fd = fd
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("dup of the {} fd", reference.display()))?;
    let (reference, cdev) = (reference.to_path_buf(), cdev.to_path_buf());
    let bind: Binder = Box::new(move || {
        let dev = VfioDevice::open_cdev(&cdev)?;
        let dev_id = dev.bind_iommufd(bind_fd.as_fd()).with_context(|| {
            format!(
                "VFIO_DEVICE_BIND_IOMMUFD {} to {}",
                cdev.display(),
                reference.display()
            )
        })?;
        Ok((dev_id, Box::new(dev) as Box<dyn std::any::Any>))
    });
    Ok(Box::new(Shadowed::new(Box::new(fd), bind)))
}

/// Find the edu device (or `bdf`), bind it to vfio-pci and return its VFIO
/// cdev (`/dev/vfio/devices/vfioN`).
pub fn edu_cdev(sysfs_root: &Path, devfs: &Path, bdf: Option<&str>) -> Result<PathBuf> {
    let bdf = crate::workload::find_edu(sysfs_root, bdf)?;
    sysfs::bind_vfio_pci(sysfs_root, &bdf, Duration::from_secs(3))?;
    let mut waited = 0;
    let name = loop {
        if let Some(n) = sysfs::vfio_cdev_name(sysfs_root, &bdf)? {
            break n;
        }
        ensure!(
            waited < 100,
            "{}/vfio-dev has no vfioN entry: is CONFIG_VFIO_DEVICE_CDEV enabled?",
            sysfs::pci_device_dir(sysfs_root, &bdf).display()
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += 1;
    };
    let cdev = devfs.join("vfio/devices").join(name);
    sysfs::wait_for_path(&cdev, Duration::from_secs(2))?;
    Ok(cdev)
}

/// An inclusive IOVA window.
pub type Window = (u64, u64);

/// The single usable window of a list of IOVA_RANGES results.
pub fn single_window(ranges: &[(u64, u64)]) -> Result<Window> {
    match ranges {
        [w] => Ok(*w),
        _ => bail!(
            "a fresh IOAS with a domain has IOVA ranges {ranges:x?}; only a single aperture window is supported"
        ),
    }
}

/// IOVA_RANGES of a fresh IOAS of `dev` (through [`Shadowed`]: with a domain).
pub fn probe_window(dev: &dyn Device) -> Result<Window> {
    let mut a = IommuIoasAlloc::new();
    let n = std::mem::size_of::<IommuIoasAlloc>();
    // SAFETY: plain structure without pointers.
    let buf =
        unsafe { std::slice::from_raw_parts_mut((&mut a as *mut IommuIoasAlloc).cast::<u8>(), n) };
    // SAFETY: no user pointers.
    unsafe { dev.ioctl_raw(IOMMU_IOAS_ALLOC, buf) }.context("probe: IOMMU_IOAS_ALLOC")?;
    let mut out = [IommuIovaRange::default(); 8];
    let mut r = IommuIoasIovaRanges::new();
    r.ioas_id = a.out_ioas_id;
    r.num_iovas = out.len() as u32;
    r.allowed_iovas = out.as_mut_ptr() as u64;
    let n = std::mem::size_of::<IommuIoasIovaRanges>();
    // SAFETY: allowed_iovas points to `out`, num_iovas entries long.
    let buf = unsafe {
        std::slice::from_raw_parts_mut((&mut r as *mut IommuIoasIovaRanges).cast::<u8>(), n)
    };
    // SAFETY: as above.
    let res = unsafe { dev.ioctl_raw(IOMMU_IOAS_IOVA_RANGES, buf) };
    let mut d = IommuDestroy::new();
    d.id = a.out_ioas_id;
    let n = std::mem::size_of::<IommuDestroy>();
    // SAFETY: plain structure without pointers.
    let buf =
        unsafe { std::slice::from_raw_parts_mut((&mut d as *mut IommuDestroy).cast::<u8>(), n) };
    // SAFETY: no user pointers.
    let destroyed = unsafe { dev.ioctl_raw(IOMMU_DESTROY, buf) };
    res.context("probe: IOMMU_IOAS_IOVA_RANGES")?;
    destroyed.context("probe: IOMMU_DESTROY")?;
    ensure!(
        r.num_iovas as usize <= out.len(),
        "probe: {} IOVA ranges",
        r.num_iovas
    );
    let list: Vec<(u64, u64)> = out[..r.num_iovas as usize]
        .iter()
        .map(|x| (x.start, x.last))
        .collect();
    single_window(&list)
}

/// Does the inclusive range of `length` bytes at `iova` reach outside `w`?
/// False for empty and overflowing ranges (refused before any IOVA check).
pub fn outside(w: Window, iova: u64, length: u64) -> bool {
    if length == 0 {
        return false;
    }
    match iova.checked_add(length - 1) {
        Some(last) => iova < w.0 || last > w.1,
        None => false,
    }
}

/// Why mainline-with-a-domain and `/dev/ioasid` legitimately differ on
/// `call`, if they do (the call is then issued on neither device).
pub fn domain_only(w: Window, call: &Call, m: &Model) -> Option<&'static str> {
    match &call.cmd {
        Cmd::Map {
            flags,
            length,
            iova,
            ..
        }
        | Cmd::MapFile {
            flags,
            length,
            iova,
            ..
        } if flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 && outside(w, *iova, *length) => {
            Some("fixed IOVA outside the domain's aperture")
        }
        Cmd::Copy {
            flags,
            length,
            dst_iova,
            ..
        } if flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 && outside(w, *dst_iova, *length) => {
            Some("fixed IOVA outside the domain's aperture")
        }
        Cmd::AllowIovas { ranges, .. }
            if ranges.iter().any(|&(s, l)| s <= l && (s < w.0 || l > w.1)) =>
        {
            Some("allowed IOVA range outside the domain's aperture")
        }
        Cmd::Option {
            option_id: IOMMU_OPTION_HUGE_PAGES,
            op: IOMMU_OPTION_OP_SET,
            object: Id::Obj(k),
            val64: 0,
            ..
        } if m
            .objs
            .get(*k)
            .is_some_and(|o| o.alive && !o.areas.is_empty()) =>
        {
            Some("huge pages off on an IOAS with areas and a domain (EINVAL on mainline)")
        }
        _ => None,
    }
}

/// Clip the first `n` ranges to `w` (the test device's IOVA_RANGES answer
/// as it would be with the domain's aperture reserved).
pub fn clip_ranges(ranges: &mut [IommuIovaRange], n: usize, w: Window) {
    for r in ranges.iter_mut().take(n) {
        if r.start <= w.1 && r.last >= w.0 {
            r.start = r.start.max(w.0);
            r.last = r.last.min(w.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::call::{Addr, FIXED_RW, RW};
    use crate::difftest::model::IoasModel;
    use std::rc::Rc;

    const W: Window = (0, (1 << 48) - 1);

    #[test]
    fn virtual_ids_are_lowest_free() {
        let mut m = IdMap::default();
        assert_eq!(m.next_virtual(), 1);
        m.insert(1, 2, 3);
        m.insert(2, 4, 5);
        assert_eq!(m.next_virtual(), 3);
        assert_eq!(m.real(2), 4);
        assert_eq!(m.real(0), 0);
        assert_eq!(m.real(7), DEAD_ID);
        assert_eq!(m.real(u32::MAX), DEAD_ID);
        m.remove(1);
        assert_eq!(m.next_virtual(), 1);
        assert_eq!(m.hwpts(), vec![5]);
    }

    #[test]
    fn id_field_offsets() {
        assert_eq!(id_fields(IOMMU_DESTROY), &[4]);
        assert_eq!(id_fields(IOMMU_IOAS_MAP), &[8]);
        assert_eq!(id_fields(IOMMU_IOAS_MAP_FILE), &[8]);
        assert_eq!(id_fields(IOMMU_IOAS_UNMAP), &[4]);
        assert_eq!(id_fields(IOMMU_IOAS_COPY), &[8, 12]);
        assert_eq!(id_fields(IOMMU_IOAS_IOVA_RANGES), &[4]);
        assert_eq!(id_fields(IOMMU_IOAS_ALLOW_IOVAS), &[4]);
        assert_eq!(id_fields(IOMMU_OPTION), &[12]);
        assert!(id_fields(IOMMU_IOAS_ALLOC).is_empty());
    }

    #[test]
    fn outside_window() {
        assert!(!outside(W, 0x10_0000, 0x1000));
        assert!(outside(W, 1 << 48, 0x1000));
        assert!(outside(W, (1 << 48) - 0x1000, 0x2000));
        assert!(!outside(W, (1 << 48) - 0x1000, 0x1000));
        assert!(outside(W, !0xfff, 0x1000));
        assert!(!outside(W, !0xfff, 0x2000), "overflow is refused first");
        assert!(!outside(W, u64::MAX, 0));
        assert!(outside((0x1000, u64::MAX), 0, 0x1000));
    }

    fn map(flags: u32, iova: u64) -> Call {
        Call::new(Cmd::Map {
            ioas: Id::Obj(0),
            flags,
            reserved: 0,
            user_va: Addr::Arena(0),
            length: 0x1000,
            iova,
        })
    }

    #[test]
    fn domain_only_calls() {
        let mut m = Model::default();
        assert!(domain_only(W, &map(FIXED_RW, 1 << 50), &m).is_some());
        assert!(domain_only(W, &map(FIXED_RW, 0x10_0000), &m).is_none());
        assert!(
            domain_only(W, &map(RW, 1 << 50), &m).is_none(),
            "not fixed: a hint"
        );
        let allow = |r: Vec<(u64, u64)>| {
            Call::new(Cmd::AllowIovas {
                ioas: Id::Obj(0),
                ranges: r,
                num_iovas: None,
                reserved: 0,
                ptr: crate::difftest::call::RangesPtr::Scratch,
            })
        };
        assert!(domain_only(W, &allow(vec![(0, u64::MAX)]), &m).is_some());
        assert!(domain_only(W, &allow(vec![(0x1000, 0x1fff)]), &m).is_none());
        // Inverted ranges are EINVAL on both.
        assert!(domain_only(W, &allow(vec![(0x2000, 0x1000)]), &m).is_none());
        let off = Call::new(Cmd::Option {
            option_id: IOMMU_OPTION_HUGE_PAGES,
            op: IOMMU_OPTION_OP_SET,
            reserved: 0,
            object: Id::Obj(0),
            val64: 0,
        });
        m.objs.push(IoasModel {
            alive: true,
            ..Default::default()
        });
        assert!(domain_only(W, &off, &m).is_none());
        m.objs[0].areas.push((0x10_0000, 0x1000));
        assert!(domain_only(W, &off, &m).is_some());
    }

    #[test]
    fn clipping() {
        let mut r = vec![
            IommuIovaRange {
                start: 0,
                last: 0xfff,
            },
            IommuIovaRange {
                start: 0x10_0000,
                last: u64::MAX,
            },
            IommuIovaRange {
                start: 7,
                last: u64::MAX,
            },
        ];
        clip_ranges(&mut r, 2, W);
        assert_eq!(r[0].last, 0xfff);
        assert_eq!(r[1].last, (1 << 48) - 1);
        assert_eq!(r[2].last, u64::MAX, "beyond n: untouched");
        assert_eq!(single_window(&[(0, 5)]).unwrap(), (0, 5));
        assert!(single_window(&[(0, 5), (9, 10)]).is_err());
    }

    /// A toy mainline: IOASes, HWPTs and the bound device from one
    /// lowest-free id allocator (from 1, as XA_FLAGS_ALLOC1); IOAS destroy
    /// is EBUSY under a HWPT; RLIMIT_MODE SET is EBUSY unless the object
    /// table is empty (iommufd_option_rlimit_mode()).
    #[derive(Default)]
    struct Fake {
        objs: RefCell<BTreeMap<u32, Obj>>,
        /// The device was unbound while a HWPT still existed.
        unbound_early: std::cell::Cell<bool>,
        /// Binding fails (the cdev cannot be opened).
        bind_fails: std::cell::Cell<bool>,
        binds: std::cell::Cell<u32>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Obj {
        Ioas,
        Hwpt(u32),
        Dev,
    }

    fn free(o: &BTreeMap<u32, Obj>) -> u32 {
        (1..).find(|i| !o.contains_key(i)).unwrap_or(u32::MAX)
    }

    impl Device for Rc<Fake> {
        unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int> {
            let err = |e| Err(std::io::Error::from_raw_os_error(e));
            let mut objs = self.objs.borrow_mut();
            let word = |o| get_u32(buf, o).unwrap_or(0);
            match nr {
                IOMMU_IOAS_ALLOC => {
                    if word(4) != 0 {
                        return err(libc::EOPNOTSUPP);
                    }
                    let id = free(&objs);
                    objs.insert(id, Obj::Ioas);
                    put_u32(buf, 8, id);
                    Ok(0)
                }
                IOMMU_HWPT_ALLOC => {
                    let ioas = word(12);
                    if objs.get(&word(8)) != Some(&Obj::Dev) || objs.get(&ioas) != Some(&Obj::Ioas)
                    {
                        return err(libc::ENOENT);
                    }
                    let id = free(&objs);
                    objs.insert(id, Obj::Hwpt(ioas));
                    put_u32(buf, 16, id);
                    Ok(0)
                }
                IOMMU_DESTROY => {
                    let id = word(4);
                    if word(0) != 8 {
                        return err(libc::EINVAL);
                    }
                    if objs.values().any(|v| *v == Obj::Hwpt(id)) {
                        return err(libc::EBUSY);
                    }
                    match objs.get(&id) {
                        Some(Obj::Ioas | Obj::Hwpt(_)) => {
                            objs.remove(&id);
                            Ok(0)
                        }
                        _ => err(libc::ENOENT),
                    }
                }
                IOMMU_IOAS_UNMAP => {
                    if objs.get(&word(4)) == Some(&Obj::Ioas) {
                        Ok(0)
                    } else {
                        err(libc::ENOENT)
                    }
                }
                IOMMU_OPTION => {
                    if word(4) == IOMMU_OPTION_RLIMIT_MODE && !objs.is_empty() {
                        err(libc::EBUSY)
                    } else {
                        Ok(0)
                    }
                }
                _ => err(libc::ENOTTY),
            }
        }
    }

    /// Keeps the fake device bound; dropping it unbinds.
    struct Binding(Rc<Fake>, u32);

    impl Drop for Binding {
        fn drop(&mut self) {
            let mut objs = self.0.objs.borrow_mut();
            if objs.values().any(|v| matches!(v, Obj::Hwpt(_))) {
                self.0.unbound_early.set(true);
            }
            objs.remove(&self.1);
        }
    }

    fn shadowed(fake: &Rc<Fake>) -> Shadowed {
        let f = fake.clone();
        let bind: Binder = Box::new(move || {
            if f.bind_fails.get() {
                bail!("cannot open /dev/vfio/devices/vfio0");
            }
            f.binds.set(f.binds.get() + 1);
            let mut objs = f.objs.borrow_mut();
            let id = free(&objs);
            objs.insert(id, Obj::Dev);
            Ok((
                id,
                Box::new(Binding(f.clone(), id)) as Box<dyn std::any::Any>,
            ))
        });
        Shadowed::new(Box::new(fake.clone()), bind)
    }

    fn call(s: &Shadowed, nr: u32, words: &[u32]) -> (std::io::Result<libc::c_int>, Vec<u32>) {
        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // SAFETY: no pointers.
        let r = unsafe { s.ioctl_raw(nr, &mut b) };
        let w = b
            .chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (r, w)
    }

    const ALLOC: [u32; 3] = [12, 0, 0];

    fn rlimit_mode(s: &Shadowed) -> Option<i32> {
        // size, option_id, op|reserved, object_id, val64 (2 words)
        let (r, _) = call(s, IOMMU_OPTION, &[24, IOMMU_OPTION_RLIMIT_MODE, 0, 0, 1, 0]);
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn shadow_virtualises_ids_and_keeps_a_hwpt_per_ioas() {
        let fake = Rc::new(Fake::default());
        let s = shadowed(&fake);
        let (r, w) = call(&s, IOMMU_IOAS_ALLOC, &ALLOC);
        assert!(r.is_ok());
        assert_eq!(w[2], 1, "virtual id");
        let (_, w) = call(&s, IOMMU_IOAS_ALLOC, &ALLOC);
        assert_eq!(w[2], 2);
        // IOAS 1, then the device bound (2) and the first HWPT (3).
        assert_eq!(s.id_map().real(1), 1);
        assert_eq!(s.id_map().real(2), 4);
        assert_eq!(s.id_map().hwpts(), vec![3, 5]);
        // Ids are translated and restored.
        let (r, w) = call(&s, IOMMU_IOAS_UNMAP, &[24, 2, 0, 0, 0, 0]);
        assert!(r.is_ok());
        assert_eq!(w[1], 2);
        let (r, _) = call(&s, IOMMU_IOAS_UNMAP, &[24, 3, 0, 0, 0, 0]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        // A failing destroy keeps the IOAS and (a new) HWPT.
        let (r, _) = call(&s, IOMMU_DESTROY, &[4, 1]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        assert_eq!(s.id_map().real(1), 1);
        assert!(s.id_map().hwpt(1).is_some());
        // Destroy: HWPT first, then the IOAS; the virtual id is reused.
        let (r, w) = call(&s, IOMMU_DESTROY, &[8, 1]);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(w[1], 1);
        assert_eq!(s.id_map().real(1), DEAD_ID);
        let (_, w) = call(&s, IOMMU_IOAS_ALLOC, &ALLOC);
        assert_eq!(w[2], 1);
        // Not an IOAS: never reaches a real object (3 is a HWPT's real id).
        let (r, _) = call(&s, IOMMU_DESTROY, &[8, 3]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(fake.binds.get(), 1, "bound once while IOASes existed");
    }

    /// The device is bound exactly while the sequence has IOASes, so
    /// mainline's object table is empty exactly when the sequence's is and
    /// RLIMIT_MODE can be set.
    #[test]
    fn device_bound_only_while_an_ioas_exists() {
        let fake = Rc::new(Fake::default());
        let s = shadowed(&fake);
        assert!(!s.is_bound());
        assert_eq!(rlimit_mode(&s), None, "empty table at open");
        // A failing IOAS_ALLOC binds nothing.
        let (r, _) = call(&s, IOMMU_IOAS_ALLOC, &[12, 1, 0]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
        assert!(!s.is_bound());
        assert!(fake.objs.borrow().is_empty());
        call(&s, IOMMU_IOAS_ALLOC, &ALLOC).0.unwrap();
        assert!(s.is_bound());
        assert_eq!(rlimit_mode(&s), Some(libc::EBUSY));
        call(&s, IOMMU_IOAS_ALLOC, &ALLOC).0.unwrap();
        call(&s, IOMMU_DESTROY, &[8, 1]).0.unwrap();
        assert!(s.is_bound(), "one IOAS left");
        // A failing destroy of the last IOAS keeps it bound, with a HWPT.
        assert!(call(&s, IOMMU_DESTROY, &[4, 2]).0.is_err());
        assert!(s.is_bound());
        assert!(s.id_map().hwpt(2).is_some());
        call(&s, IOMMU_DESTROY, &[8, 2]).0.unwrap();
        assert!(!s.is_bound());
        assert!(fake.objs.borrow().is_empty(), "{:?}", fake.objs.borrow());
        assert!(!fake.unbound_early.get());
        assert_eq!(rlimit_mode(&s), None);
        // Bound again for the next IOAS.
        call(&s, IOMMU_IOAS_ALLOC, &ALLOC).0.unwrap();
        assert_eq!(fake.binds.get(), 2);
        // Closing: HWPT destroyed before the device is unbound.
        drop(s);
        assert!(!fake.unbound_early.get());
        assert_eq!(
            fake.objs.borrow().values().copied().collect::<Vec<_>>(),
            vec![Obj::Ioas],
            "only the IOAS is left for the kernel's close"
        );
    }

    /// A device that cannot be bound is a run error (no errno), not a difference.
    #[test]
    fn bind_failure_is_an_error() {
        let fake = Rc::new(Fake::default());
        fake.bind_fails.set(true);
        let s = shadowed(&fake);
        let e = call(&s, IOMMU_IOAS_ALLOC, &ALLOC).0.unwrap_err();
        assert_eq!(e.raw_os_error(), None);
        assert!(
            e.to_string()
                .contains("cannot open /dev/vfio/devices/vfio0"),
            "{e}"
        );
    }
}
