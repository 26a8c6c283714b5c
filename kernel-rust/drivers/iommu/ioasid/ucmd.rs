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
    size_of::<uapi::iommu_hw_info>(),
    size_of::<uapi::iommu_hwpt_alloc>(),
    size_of::<uapi::iommu_ioas_alloc>(),
    size_of::<uapi::iommu_ioas_allow_iovas>(),
    size_of::<uapi::iommu_ioas_copy>(),
    size_of::<uapi::iommu_ioas_iova_ranges>(),
    size_of::<uapi::iommu_ioas_map>(),
    size_of::<uapi::iommu_ioas_unmap>(),
    size_of::<uapi::iommu_option>(),
]);

/// A command struct as bytes, zero-extended to [`UCMD_BUFFER_SIZE`].
type UcmdBytes = [u8; UCMD_BUFFER_SIZE];

/// Byte arrays of command structs (`__u8 __reserved[3]`) decode as themselves, so that
/// [`ucmd_struct!`] can name them like integer fields.
trait ByteArray<const N: usize> {
    fn from_ne_bytes(bytes: [u8; N]) -> Self;
    fn to_ne_bytes(self) -> [u8; N];
}

impl<const N: usize> ByteArray<N> for [u8; N] {
    fn from_ne_bytes(bytes: [u8; N]) -> Self {
        bytes
    }

    fn to_ne_bytes(self) -> [u8; N] {
        self
    }
}

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
/// back as they were copied in. Only integer and byte array fields are supported.
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

ucmd_struct! {
    /// `struct iommu_ioas_iova_ranges`: the argument of `IOMMU_IOAS_IOVA_RANGES`.
    struct IommuIoasIovaRanges = uapi::iommu_ioas_iova_ranges, min_size = out_iova_alignment {
        /// The IOAS.
        ioas_id: u32,
        /// Input: room in `allowed_iovas`; output: the number of ranges.
        num_iovas: u32,
        /// Must be zero.
        __reserved: u32,
        /// User pointer to an array of `struct iommu_iova_range`.
        allowed_iovas: u64,
        /// Output: the minimum alignment of IOVAs.
        out_iova_alignment: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_allow_iovas`: the argument of `IOMMU_IOAS_ALLOW_IOVAS`.
    struct IommuIoasAllowIovas = uapi::iommu_ioas_allow_iovas, min_size = allowed_iovas {
        /// The IOAS.
        ioas_id: u32,
        /// The number of ranges in `allowed_iovas`.
        num_iovas: u32,
        /// Must be zero.
        __reserved: u32,
        /// User pointer to an array of `struct iommu_iova_range`.
        allowed_iovas: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_map`: the argument of `IOMMU_IOAS_MAP`.
    struct IommuIoasMap = uapi::iommu_ioas_map, min_size = iova {
        /// `IOMMU_IOAS_MAP_*`.
        flags: u32,
        /// The IOAS.
        ioas_id: u32,
        /// Must be zero.
        __reserved: u32,
        /// The user address of the memory to map.
        user_va: u64,
        /// The number of bytes to map.
        length: u64,
        /// Input with `IOMMU_IOAS_MAP_FIXED_IOVA`, else output: the IOVA of the mapping.
        iova: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_map_file`: the argument of `IOMMU_IOAS_MAP_FILE`.
    struct IommuIoasMapFile = uapi::iommu_ioas_map_file, min_size = iova {
        /// `IOMMU_IOAS_MAP_*`.
        flags: u32,
        /// The IOAS.
        ioas_id: u32,
        /// The file descriptor of the memfd to map.
        fd: i32,
        /// The offset in the file of the first byte to map.
        start: u64,
        /// The number of bytes to map.
        length: u64,
        /// Input with `IOMMU_IOAS_MAP_FIXED_IOVA`, else output: the IOVA of the mapping.
        iova: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_copy`: the argument of `IOMMU_IOAS_COPY`.
    struct IommuIoasCopy = uapi::iommu_ioas_copy, min_size = src_iova {
        /// `IOMMU_IOAS_MAP_*`.
        flags: u32,
        /// The IOAS to map into.
        dst_ioas_id: u32,
        /// The IOAS to copy from.
        src_ioas_id: u32,
        /// The number of bytes to copy.
        length: u64,
        /// Input with `IOMMU_IOAS_MAP_FIXED_IOVA`, else output: the IOVA in the destination.
        dst_iova: u64,
        /// The IOVA of the start of the range in the source.
        src_iova: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_ioas_unmap`: the argument of `IOMMU_IOAS_UNMAP`.
    struct IommuIoasUnmap = uapi::iommu_ioas_unmap, min_size = length {
        /// The IOAS.
        ioas_id: u32,
        /// The first IOVA to unmap.
        iova: u64,
        /// Input: the number of bytes to unmap; output: the number of bytes unmapped.
        length: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_option`: the argument of `IOMMU_OPTION`.
    struct IommuOption = uapi::iommu_option, min_size = val64 {
        /// `IOMMU_OPTION_*`.
        option_id: u32,
        /// `IOMMU_OPTION_OP_*`.
        op: u16,
        /// Must be zero.
        __reserved: u16,
        /// The object the option applies to, or 0.
        object_id: u32,
        /// The value to set, or the value read.
        val64: u64,
    }
}

ucmd_struct! {
    /// `struct iommu_hwpt_alloc`: the argument of `IOMMU_HWPT_ALLOC`.
    struct IommuHwptAlloc = uapi::iommu_hwpt_alloc, min_size = __reserved {
        /// `IOMMU_HWPT_ALLOC_*`.
        flags: u32,
        /// The device the HWPT is for.
        dev_id: u32,
        /// The IOAS the HWPT maps.
        pt_id: u32,
        /// Output: the id of the new HWPT.
        out_hwpt_id: u32,
        /// Must be zero.
        __reserved: u32,
        /// `IOMMU_HWPT_DATA_*`: the type of the driver-specific data.
        data_type: u32,
        /// The length of the driver-specific data.
        data_len: u32,
    }
}

ucmd_struct! {
    /// `struct iommu_hw_info`: the argument of `IOMMU_GET_HW_INFO`.
    struct IommuHwInfo = uapi::iommu_hw_info, min_size = __reserved {
        /// `IOMMU_HW_INFO_FLAG_*`.
        flags: u32,
        /// The device.
        dev_id: u32,
        /// Input: the room at `data_uptr`; output: the length of the driver's data.
        data_len: u32,
        /// User pointer to the buffer for the driver's data.
        data_uptr: u64,
        /// The union of `in_data_type` and `out_data_type`, `IOMMU_HW_INFO_TYPE_*`.
        __bindgen_anon_1: u32,
        /// Output: log2 of the number of PASIDs of the device.
        out_max_pasid_log2: u8,
        /// Must be zero.
        __reserved: [u8; 3],
        /// Output: `IOMMU_HW_CAP_*`.
        out_capabilities: u64,
    }
}

/// Size of `struct iommu_iova_range` in user memory.
const IOVA_RANGE_SIZE: usize = size_of::<uapi::iommu_iova_range>();
const _: () = assert!(IOVA_RANGE_SIZE == 16);
const _: () = assert!(core::mem::offset_of!(uapi::iommu_iova_range, start) == 0);
const _: () = assert!(core::mem::offset_of!(uapi::iommu_iova_range, last) == 8);

/// Returns the user address of element `index` of a user array of `struct iommu_iova_range`.
fn iova_range_addr(array: u64, index: u32) -> Result<usize> {
    // CAST: `u32` to `usize` does not truncate on the architectures Linux supports.
    let offset = (index as usize)
        .checked_mul(IOVA_RANGE_SIZE)
        .ok_or(EFAULT)?;
    usize::try_from(array)
        .ok()
        .and_then(|addr| addr.checked_add(offset))
        .ok_or(EFAULT)
}

/// Reads element `index` of the user array of `struct iommu_iova_range` at `array`, as
/// `(start, last)`.
pub(crate) fn read_iova_range(array: u64, index: u32) -> Result<(u64, u64)> {
    let mut bytes = [0u8; IOVA_RANGE_SIZE];
    UserSlice::new(
        UserPtr::from_addr(iova_range_addr(array, index)?),
        IOVA_RANGE_SIZE,
    )
    .reader()
    .read_slice(&mut bytes)?;
    let mut start = [0u8; 8];
    let mut last = [0u8; 8];
    start.copy_from_slice(&bytes[..8]);
    last.copy_from_slice(&bytes[8..]);
    Ok((u64::from_ne_bytes(start), u64::from_ne_bytes(last)))
}

/// Writes `(start, last)` to element `index` of the user array of `struct iommu_iova_range` at
/// `array`.
pub(crate) fn write_iova_range(array: u64, index: u32, start: u64, last: u64) -> Result {
    let mut bytes = [0u8; IOVA_RANGE_SIZE];
    bytes[..8].copy_from_slice(&start.to_ne_bytes());
    bytes[8..].copy_from_slice(&last.to_ne_bytes());
    UserSlice::new(
        UserPtr::from_addr(iova_range_addr(array, index)?),
        IOVA_RANGE_SIZE,
    )
    .writer()
    .write_slice(&bytes)
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

    /// Writes back only the `u64` field at `offset` of the command struct, as `IOMMU_OPTION`
    /// does with `val64`.
    pub(crate) fn respond_u64(&self, offset: usize, value: u64) -> Result {
        UserSlice::new(
            UserPtr::from_addr(self.ubuffer.wrapping_add(offset)),
            size_of::<u64>(),
        )
        .writer()
        .write_slice(&value.to_ne_bytes())
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
