// SPDX-License-Identifier: GPL-2.0

//! IO address spaces (IOAS), the analogue of iommufd's `ioas.c`.

use kernel::prelude::*;

use crate::{
    object::{
        NewObject,
        Object, //
    },
    ucmd::{
        IommuIoasAlloc,
        Ucmd, //
    },
    IoasidCtx,
};

/// An IO address space: the IOVA space that devices attached to it see.
///
/// It holds nothing yet; the IOVA to memory mappings come with `IOMMU_IOAS_MAP`.
pub(crate) struct Ioas;

/// `IOMMU_IOAS_ALLOC`: creates an IOAS and returns its id in `out_ioas_id`, like
/// `iommufd_ioas_alloc_ioctl()`.
pub(crate) fn alloc(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasAlloc>) -> Result {
    if ucmd.cmd.flags != 0 {
        return Err(EOPNOTSUPP);
    }

    let new_object = NewObject::new(&ctx.objects)?;
    let ioas = Ioas;

    ucmd.cmd.out_ioas_id = new_object.id();
    // On failure `new_object` is dropped, which frees the id again.
    ucmd.respond()?;

    new_object.finalize(Object::Ioas(ioas));
    Ok(())
}
