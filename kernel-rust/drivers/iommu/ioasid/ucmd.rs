// SPDX-License-Identifier: GPL-2.0

//! iommufd command structs: copying them in from and back out to userspace.
//!
//! Every iommufd ioctl takes a pointer to an extensible struct whose first member is `__u32 size`,
//! the size of the struct userspace was compiled against. [`Ucmd::copy_from_user`] reads such a
//! struct following the rules of `iommufd_fops_ioctl()` and `copy_struct_from_user()`, and
//! [`Ucmd::respond`] writes it back like `iommufd_ucmd_respond()`.
//!
//! The structs are moved as raw bytes and their fields are decoded and encoded with
//! native-endian conversions, so no unsafe code is needed. Struct sizes and field offsets are
//! taken from the bindgen output of `include/uapi/linux/iommufd.h`, and every field is checked at
//! build time to have the size of the C field of the same name, so the layouts cannot drift from
//! the C header.

use core::mem::offset_of;
use kernel::{
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
};

/// Returns the size of the field that `field` projects `S` to.
///
/// Used with a closure to name a field: `field_size(|s: &S| &s.field)`.
const fn field_size<S, F>(_field: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// Returns the largest of `sizes`.
const fn max_size(sizes: &[usize]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max
}

/// Size of the buffer a command struct is decoded from: the size of the largest command struct
/// the driver implements, like `union ucmd_buffer` in iommufd's `main.c`.
///
/// [`ucmd_struct!`] fails the build for a struct that is missing here.
const UCMD_BUFFER_SIZE: usize = max_size(&[
    size_of::<uapi::iommu_destroy>(),
    size_of::<uapi::iommu_ioas_alloc>(),
]);

/// A command struct as bytes, zero-extended to [`UCMD_BUFFER_SIZE`].
type UcmdBytes = [u8; UCMD_BUFFER_SIZE];

/// Returns the `N` bytes at `offset` of `bytes`.
///
/// Callers pass a constant `offset` that [`ucmd_struct!`] has checked to be in bounds, so the
/// compiler removes the bounds check.
#[inline(always)]
fn load<const N: usize>(bytes: &UcmdBytes, offset: usize) -> [u8; N] {
    let mut field = [0u8; N];
    field.copy_from_slice(&bytes[offset..offset + N]);
    field
}

/// Stores `field` at `offset` of `bytes`, see [`load`].
#[inline(always)]
fn store<const N: usize>(bytes: &mut UcmdBytes, offset: usize, field: [u8; N]) {
    bytes[offset..offset + N].copy_from_slice(&field);
}

/// An iommufd command struct, a `struct iommu_*` of `include/uapi/linux/iommufd.h`.
///
/// Implemented by [`ucmd_struct!`].
pub(crate) trait UcmdStruct: Sized {
    /// `sizeof()` the C struct: the part of a user struct the kernel understands.
    const SIZE: usize;

    /// `offsetofend()` of the last field of the first version of the C struct: the smallest size
    /// userspace may pass.
    const MIN_SIZE: usize;

    /// Decodes the struct from its bytes.
    fn decode(bytes: &UcmdBytes) -> Self;

    /// Encodes the struct into its bytes.
    fn encode(&self, bytes: &mut UcmdBytes);
}

/// Defines a Rust struct mirroring an iommufd command struct and implements [`UcmdStruct`].
///
/// The fields must be named and typed like those of the C struct, but may omit the ones the
/// driver does not use, such as `size` (which [`Ucmd`] handles); [`Ucmd::respond`] writes those
/// back as they were copied in. Only integer fields are supported.
///
/// `min_size` names the field that ends the smallest struct userspace may pass, like the `_last`
/// argument of iommufd's `IOCTL_OP()`.
macro_rules! ucmd_struct {
    (
        $(#[$meta:meta])*
        struct $name:ident = uapi::$c_struct:ident, min_size = $last:ident {
            $($(#[$field_meta:meta])* $field:ident: $type:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub(crate) struct $name {
            $($(#[$field_meta])* pub(crate) $field: $type,)*
        }

        // Like `BUILD_BUG_ON_ZERO(sizeof(union ucmd_buffer) < sizeof(_struct))` in `IOCTL_OP()`.
        const _: () = assert!(size_of::<uapi::$c_struct>() <= UCMD_BUFFER_SIZE);
        // A field has the size of its C counterpart, so it is within the struct and
        // `load()`/`store()` cannot go out of bounds.
        $(const _: () = assert!(
            field_size(|s: &uapi::$c_struct| &s.$field) == size_of::<$type>()
        );)*

        impl UcmdStruct for $name {
            const SIZE: usize = size_of::<uapi::$c_struct>();
            const MIN_SIZE: usize = offset_of!(uapi::$c_struct, $last)
                + field_size(|s: &uapi::$c_struct| &s.$last);

            fn decode(bytes: &UcmdBytes) -> Self {
                Self {
                    $($field: <$type>::from_ne_bytes(load(
                        bytes,
                        offset_of!(uapi::$c_struct, $field),
                    )),)*
                }
            }

            fn encode(&self, bytes: &mut UcmdBytes) {
                $(store(
                    bytes,
                    offset_of!(uapi::$c_struct, $field),
                    self.$field.to_ne_bytes(),
                );)*
            }
        }
    };
}

ucmd_struct! {
    /// `struct iommu_destroy`: the argument of `IOMMU_DESTROY`.
    struct IommuDestroy = uapi::iommu_destroy, min_size = id {
        /// The object to destroy.
        id: u32,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_alloc`: the argument of `IOMMU_IOAS_ALLOC`.
    struct IommuIoasAlloc = uapi::iommu_ioas_alloc, min_size = out_ioas_id {
        /// No flags are defined.
        flags: u32,
        /// Output: the id of the new IOAS.
        out_ioas_id: u32,
    }
}

/// Reads the `size` member of the command struct at `ubuffer`, the analogue of the `get_user()`
/// at the start of `iommufd_fops_ioctl()`.
pub(crate) fn read_user_size(ubuffer: usize) -> Result<u32> {
    UserSlice::new(UserPtr::from_addr(ubuffer), size_of::<u32>())
        .reader()
        .read::<u32>()
}

/// Checks that the `len` bytes of user memory at `addr` are zero, like `check_zeroed_user()`.
///
/// Fails with [`E2BIG`] at the first non-zero byte and with [`EFAULT`] at the first inaccessible
/// byte, whichever comes first.
fn check_zeroed_user(mut addr: usize, mut len: usize) -> Result {
    // Reads are aligned to `CHUNK`, a divisor of the page size, so a read never straddles a page
    // boundary and a fault is not reported while an earlier byte is non-zero, as in the C helper.
    // Unlike the C helper, a range reaching past the end of the user address space fails with
    // `EFAULT` only when the scan gets there, as `access_ok()` is not available to Rust.
    const CHUNK: usize = 64;
    let mut chunk = [0u8; CHUNK];

    while len > 0 {
        let n = len.min(CHUNK - addr % CHUNK);
        let bytes = &mut chunk[..n];
        UserSlice::new(UserPtr::from_addr(addr), n)
            .reader()
            .read_slice(bytes)?;
        if bytes.iter().any(|&byte| byte != 0) {
            return Err(E2BIG);
        }
        addr = addr.checked_add(n).ok_or(EFAULT)?;
        len -= n;
    }
    Ok(())
}

/// A user command being executed: the analogue of `struct iommufd_ucmd`.
pub(crate) struct Ucmd<T> {
    /// The user address of the command struct.
    ubuffer: usize,
    /// The size of the user struct, as read by [`read_user_size`].
    user_size: usize,
    /// The command struct as copied in, zero-extended.
    bytes: UcmdBytes,
    /// The decoded command struct.
    pub(crate) cmd: T,
}

impl<T: UcmdStruct> Ucmd<T> {
    /// Copies in the command struct at `ubuffer` whose `size` member read `user_size`.
    ///
    /// Fails with [`EINVAL`] if `user_size` is below [`UcmdStruct::MIN_SIZE`], with [`E2BIG`] if
    /// it exceeds [`UcmdStruct::SIZE`] and the excess bytes are not all zero, and with [`EFAULT`]
    /// if the struct cannot be read. A struct shorter than [`UcmdStruct::SIZE`] is zero-extended,
    /// which gives the fields it lacks their default value of zero.
    ///
    /// The `size` member is read again here, as in `copy_struct_from_user()`; the kernel goes by
    /// `user_size`, so userspace changing `size` in between only changes what is written back.
    pub(crate) fn copy_from_user(ubuffer: usize, user_size: u32) -> Result<Self> {
        // CAST: `usize` is at least 32 bits wide on all architectures Linux supports.
        let user_size = user_size as usize;
        if user_size < T::MIN_SIZE {
            return Err(EINVAL);
        }

        // `copy_struct_from_user()` checks the tail before it copies the head.
        let size = user_size.min(T::SIZE);
        if user_size > size {
            check_zeroed_user(ubuffer.wrapping_add(size), user_size - size)?;
        }

        let mut bytes: UcmdBytes = [0; UCMD_BUFFER_SIZE];
        UserSlice::new(UserPtr::from_addr(ubuffer), size)
            .reader()
            .read_slice(&mut bytes[..size])?;

        Ok(Self {
            ubuffer,
            user_size,
            bytes,
            cmd: T::decode(&bytes),
        })
    }

    /// Writes the command struct back to userspace, truncated to the size userspace passed, like
    /// `iommufd_ucmd_respond()`.
    ///
    /// The struct is written as copied in, with the fields of [`Ucmd::cmd`] stored over it.
    pub(crate) fn respond(&self) -> Result {
        let mut bytes = self.bytes;
        self.cmd.encode(&mut bytes);

        let size = self.user_size.min(T::SIZE);
        UserSlice::new(UserPtr::from_addr(self.ubuffer), size)
            .writer()
            .write_slice(&bytes[..size])
    }
}
