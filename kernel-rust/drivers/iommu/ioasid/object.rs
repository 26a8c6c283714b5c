// SPDX-License-Identifier: GPL-2.0

//! The object table of an open `/dev/ioasid` file.
//!
//! See the design notes in `ioasid.rs` for how objects are created, looked up and destroyed.

use kernel::{
    id_pool::IdPool,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        Arc,
        Mutex, //
    },
};

use crate::{
    device::IoasidDevice,
    hwpt::Hwpt,
    ioas::Ioas, //
};

/// The smallest object id, as with `XA_FLAGS_ALLOC1` in iommufd: 0 is never a valid id.
const FIRST_ID: usize = 1;

/// An object of an open `/dev/ioasid` file, the analogue of iommufd's `struct iommufd_object`
/// with its `enum iommufd_object_type`.
pub(crate) enum Object {
    /// An IO address space. Ioctls working on it hold a reference, so that they run without
    /// the table lock.
    Ioas(Arc<Ioas>),
    /// A hardware page table of an IOAS: an IOMMU paging domain that maps what the IOAS maps.
    HwptPaging(Arc<Hwpt>),
    /// A VFIO device bound to the file. Only unbinding, when vfio closes the device, removes
    /// it.
    Device(Arc<IoasidDevice>),
}

impl Object {
    /// The name of the kind of the object in fdinfo: the `IOMMUFD_OBJ_*` name in lower case.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Object::Ioas(_) => "ioas",
            Object::HwptPaging(_) => "hwpt_paging",
            Object::Device(_) => "device",
        }
    }
}

/// The objects of an open `/dev/ioasid` file, by id.
///
/// # Invariants
///
/// - Every key of `objects` is allocated in `ids`.
/// - An id allocated in `ids` but absent from `objects` is held by exactly one [`NewObject`].
pub(crate) struct ObjectTable {
    /// The allocated ids, of live objects and of objects being created.
    ids: IdPool,
    /// The live objects.
    objects: RBTree<u32, Object>,
}

impl ObjectTable {
    /// Creates an empty table.
    pub(crate) fn new() -> Self {
        // INVARIANT: Both are empty.
        Self {
            ids: IdPool::new(),
            objects: RBTree::new(),
        }
    }

    /// Allocates the lowest free id, like `xa_alloc()` on iommufd's object xarray.
    ///
    /// Fails with [`EBUSY`] when the id space is exhausted, as `xa_alloc()` does.
    fn alloc_id(&mut self) -> Result<u32> {
        loop {
            if let Some(unused) = self.ids.find_unused_id(FIRST_ID) {
                let id = unused.as_u32();
                unused.acquire();
                return Ok(id);
            }
            // Ids are bounded by `BitmapVec::MAX_LEN`, that is `i32::MAX`, like iommufd's
            // `xa_limit_31b`.
            let request = self.ids.grow_request().ok_or(EBUSY)?;
            let resizer = request.realloc(GFP_KERNEL_ACCOUNT)?;
            self.ids.grow(resizer);
        }
    }

    /// Removes the live object `id` from the table and returns it.
    ///
    /// Fails with [`ENOENT`] if there is no such object, including when `id` is still being
    /// created, like `iommufd_object_remove()`.
    pub(crate) fn remove(&mut self, id: u32) -> Result<Object> {
        // An object that others use cannot go, as in `iommufd_object_remove()`: an IOAS with
        // hardware page tables, a hardware page table with devices attached, or a device.
        match self.objects.get(&id).ok_or(ENOENT)? {
            Object::Ioas(ioas) => {
                if self.iter().any(|(_, object)| {
                    matches!(object, Object::HwptPaging(hwpt) if Arc::ptr_eq(hwpt.ioas(), ioas))
                }) {
                    return Err(EBUSY);
                }
            }
            Object::HwptPaging(hwpt) => {
                if hwpt.users() > 0 {
                    return Err(EBUSY);
                }
            }
            Object::Device(_) => return Err(EBUSY),
        }
        self.remove_unchecked(id)
    }

    /// Removes the object `id` whoever uses it, for the owner of a reference that keeps it
    /// alive: unbinding removes its device, the last detach an automatic page table.
    pub(crate) fn remove_unchecked(&mut self, id: u32) -> Result<Object> {
        let object = self.objects.remove(&id).ok_or(ENOENT)?;
        // INVARIANT: `id` is no longer a key of `objects`.
        self.ids.release_id(id as usize);
        Ok(object)
    }

    /// Returns the object `id`.
    pub(crate) fn get(&self, id: u32) -> Option<&Object> {
        self.objects.get(&id)
    }

    /// Returns the IOAS `id`, like `iommufd_get_ioas()`.
    ///
    /// Fails with [`ENOENT`] if there is no live object `id` or if it is not an IOAS.
    pub(crate) fn get_ioas(&self, id: u32) -> Result<Arc<Ioas>> {
        match self.objects.get(&id) {
            Some(Object::Ioas(ioas)) => Ok(ioas.clone()),
            // `iommufd_get_object()` fails with `ENOENT` for an object of the wrong type too.
            Some(_) | None => Err(ENOENT),
        }
    }

    /// Returns `true` if the table has no live objects.
    pub(crate) fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Returns the live objects in ascending order of id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u32, &Object)> {
        self.objects.iter()
    }
}

/// An object being created: its id is allocated but the object is not in the table yet, so no
/// other ioctl can find or destroy it.
///
/// This is the analogue of iommufd's reserved `XA_ZERO_ENTRY` between `iommufd_object_alloc()`
/// and `iommufd_object_finalize()`. It lets an ioctl do fallible work, such as writing the new id
/// back to userspace, without holding the table lock: on failure dropping the [`NewObject`]
/// releases the id, like `iommufd_object_abort()`.
///
/// # Invariants
///
/// - `id` is allocated in the table's `ids` and absent from its `objects`.
/// - `node` is `Some` until [`NewObject::finalize`] consumes it.
pub(crate) struct NewObject<'a> {
    table: &'a Mutex<ObjectTable>,
    id: u32,
    /// Memory for the table entry, allocated up front so that finalizing cannot fail.
    node: Option<RBTreeNodeReservation<u32, Object>>,
}

impl<'a> NewObject<'a> {
    /// Allocates an id and the memory of a table entry for a new object.
    pub(crate) fn new(table: &'a Mutex<ObjectTable>) -> Result<Self> {
        let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
        let id = table.lock().alloc_id()?;
        // INVARIANT: `id` was just allocated, so it is not a key of `objects`.
        Ok(Self {
            table,
            id,
            node: Some(node),
        })
    }

    /// The id of the new object.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Publishes `object` in the table under the id of `self`, like `iommufd_object_finalize()`.
    pub(crate) fn finalize(mut self, object: Object) {
        if let Some(node) = self.node.take() {
            let mut table = self.table.lock();
            // INVARIANT: `id` stays allocated in `ids` and becomes a key of `objects`.
            let old = table.objects.insert(node.into_node(self.id, object));
            // Cannot happen: by the type invariants `id` was not a key of `objects`.
            kernel::warn_on!(old.is_some());
        }
    }
}

impl Drop for NewObject<'_> {
    fn drop(&mut self) {
        // Creation failed before `finalize`: give the id back.
        if self.node.is_some() {
            self.table.lock().ids.release_id(self.id as usize);
        }
    }
}
