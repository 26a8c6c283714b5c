// SPDX-License-Identifier: GPL-2.0

//! VFIO IOMMU providers.
//!
//! A VFIO device cdev is bound to an iommufd file with `VFIO_DEVICE_BIND_IOMMUFD`, then attached
//! to an IO address space with `VFIO_DEVICE_ATTACH_IOMMUFD_PT`. An IOMMU user API written as a
//! [`MiscDevice`] can take iommufd's place: once registered with [`ProviderRegistration`], its
//! files bind VFIO devices with the same ioctls, and vfio hands the device to the provider's
//! [`IommuProvider`] callbacks.
//!
//! C header: [`include/linux/vfio.h`](srctree/include/linux/vfio.h)

use crate::{
    bindings,
    device::Device,
    error::{
        from_result,
        to_result,
        Error,
        Result, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::marker::PhantomData;

/// An IOMMU user API that VFIO device cdevs can bind to, in place of iommufd.
///
/// The provider is the [`MiscDevice`] whose files userspace passes to
/// `VFIO_DEVICE_BIND_IOMMUFD`. A successful [`IommuProvider::bind`] returns a
/// [`IommuProvider::Binding`], which vfio keeps until the device file is closed; dropping it
/// unbinds the device. vfio detaches the device before it drops the binding.
pub trait IommuProvider: MiscDevice {
    /// The state of one device bound to a file of the provider.
    type Binding: Send + Sync;

    /// Binds `dev` to the provider file whose private data is `ctx`.
    ///
    /// Returns the binding and the id that names the device in the file, which
    /// `VFIO_DEVICE_BIND_IOMMUFD` reports to userspace. Called with vfio's device set lock held.
    fn bind(
        ctx: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        dev: &Device,
    ) -> Result<(KBox<Self::Binding>, u32)>;

    /// Attaches the device to the page table `*pt_id` names, or replaces its attachment, and
    /// may set `*pt_id` to the id of the page table it used. Called with vfio's device set lock
    /// held.
    fn attach(binding: &Self::Binding, pt_id: &mut u32) -> Result;

    /// Detaches the device, if it is attached. Called with vfio's device set lock held.
    fn detach(binding: &Self::Binding);

    /// Whether the DMA of the device is always coherent with the CPU caches: the answer of
    /// `vfio_file_enforced_coherent()` for its files, which tells KVM whether a guest needs a
    /// working `WBINVD`. Called with vfio's device set lock held, under KVM's locks.
    fn enforced_coherent(binding: &Self::Binding) -> bool;
}

/// The registration of an [`IommuProvider`] with vfio: while it lives, the files of the misc
/// device it was registered for bind VFIO device cdevs.
///
/// # Invariants
///
/// `inner` is registered with `vfio_register_iommu_provider()`, with the callbacks of
/// [`ProviderVTable<T>`] and the file operations of a registered [`MiscDeviceRegistration<T>`],
/// until the drop of this value unregisters it.
#[pin_data(PinnedDrop)]
pub struct ProviderRegistration<T: IommuProvider> {
    #[pin]
    inner: Opaque<bindings::vfio_iommu_provider>,
    _t: PhantomData<T>,
}

// SAFETY: The registration may be dropped, which unregisters it, from any thread.
unsafe impl<T: IommuProvider> Send for ProviderRegistration<T> {}
// SAFETY: `&ProviderRegistration` gives access to nothing.
unsafe impl<T: IommuProvider> Sync for ProviderRegistration<T> {}

impl<T: IommuProvider> ProviderRegistration<T> {
    /// Registers `T` as an IOMMU provider for the files of `misc`.
    ///
    /// Fails with [`EEXIST`] if the files of `misc` are registered already.
    pub fn register(misc: &MiscDeviceRegistration<T>) -> impl PinInit<Self, Error> + '_ {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::vfio_iommu_provider| {
                // SAFETY: `misc` is registered, so its `fops` are the file operations its files
                // get in `misc_open()`, which point to `MiscdeviceVTable<T>`.
                let fops = unsafe { (*misc.as_raw()).fops };
                // SAFETY: The initializer may write to `slot`.
                unsafe {
                    slot.write(bindings::vfio_iommu_provider {
                        fops,
                        bind: Some(ProviderVTable::<T>::bind),
                        unbind: Some(ProviderVTable::<T>::unbind),
                        attach: Some(ProviderVTable::<T>::attach),
                        detach: Some(ProviderVTable::<T>::detach),
                        enforced_coherent: Some(ProviderVTable::<T>::enforced_coherent),
                        ..pin_init::zeroed()
                    })
                };
                // SAFETY: `slot` is pinned and is unregistered in `drop` before it goes away.
                // INVARIANT: It is registered if this succeeds.
                to_result(unsafe { bindings::vfio_register_iommu_provider(slot) })
            }),
            _t: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: IommuProvider> PinnedDrop for ProviderRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants `inner` is registered, and unregistered only here.
        unsafe { bindings::vfio_unregister_iommu_provider(self.inner.get()) };
    }
}

/// The C callbacks of a [`ProviderRegistration<T>`].
struct ProviderVTable<T: IommuProvider>(PhantomData<T>);

impl<T: IommuProvider> ProviderVTable<T> {
    /// # Safety
    ///
    /// `file` is a file of the misc device `T` is registered for, which vfio holds a reference
    /// to, `dev` a device vfio holds, and `out_devid` valid for writes.
    unsafe extern "C" fn bind(
        file: *mut bindings::file,
        dev: *mut bindings::device,
        out_devid: *mut u32,
    ) -> *mut bindings::vfio_iommu_binding {
        // SAFETY: The file was opened through `MiscdeviceVTable<T>::open`, which stored a
        // `T::Ptr` in its private data; it is released only when the file is, and vfio holds
        // the file for the whole call.
        let ctx = unsafe { <T::Ptr as ForeignOwnable>::borrow((*file).private_data) };
        // SAFETY: vfio holds a reference to the device for the whole call.
        let dev = unsafe { Device::from_raw(dev) };
        match T::bind(ctx, dev) {
            Ok((binding, devid)) => {
                // SAFETY: The caller ensures `out_devid` is valid for writes.
                unsafe { *out_devid = devid };
                KBox::into_raw(binding).cast()
            }
            Err(e) => e.to_ptr(),
        }
    }

    /// # Safety
    ///
    /// `binding` was returned by [`Self::bind`] and is not used after this call.
    unsafe extern "C" fn unbind(binding: *mut bindings::vfio_iommu_binding) {
        // SAFETY: The caller passes the ownership of the binding `bind` made.
        drop(unsafe { KBox::<T::Binding>::from_raw(binding.cast()) });
    }

    /// # Safety
    ///
    /// `binding` was returned by [`Self::bind`] and not unbound, `pt_id` is valid for reads and
    /// writes.
    unsafe extern "C" fn attach(
        binding: *mut bindings::vfio_iommu_binding,
        pt_id: *mut u32,
    ) -> i32 {
        from_result(|| {
            // SAFETY: The caller ensures the binding is live and `pt_id` valid.
            let (binding, pt_id) = unsafe { (&*binding.cast::<T::Binding>(), &mut *pt_id) };
            T::attach(binding, pt_id)?;
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// `binding` was returned by [`Self::bind`] and not unbound.
    unsafe extern "C" fn detach(binding: *mut bindings::vfio_iommu_binding) {
        // SAFETY: The caller ensures the binding is live.
        T::detach(unsafe { &*binding.cast::<T::Binding>() });
    }

    /// # Safety
    ///
    /// `binding` was returned by [`Self::bind`] and not unbound.
    unsafe extern "C" fn enforced_coherent(binding: *mut bindings::vfio_iommu_binding) -> bool {
        // SAFETY: The caller ensures the binding is live.
        T::enforced_coherent(unsafe { &*binding.cast::<T::Binding>() })
    }
}
