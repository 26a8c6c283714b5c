// SPDX-License-Identifier: GPL-2.0

//! Pinned user memory and its accounting, the analogue of iommufd's `pages.c`.
//!
//! See "Pinning and accounting" in `ioasid.rs` for the design and its invariants.

use kernel::{
    alloc::KVVec,
    capability::{
        capable,
        Capability, //
    },
    mm::{
        account::{
            memlock_limit_pages,
            User, //
        },
        pin::LongTermPins,
        Mm,
    },
    fs::LocalFile,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
    uaccess::UserPtr,
};

/// Where pinned pages are charged, iommufd's `IOMMU_OPTION_RLIMIT_MODE`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountMode {
    /// To the `locked_vm` of the user of the file (`IOPT_PAGES_ACCOUNT_USER`), the default.
    User,
    /// To the `locked_vm` of the address space of the file (`IOPT_PAGES_ACCOUNT_MM`), like VFIO
    /// type1.
    Mm,
}

impl AccountMode {
    /// The name of the mode in fdinfo.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AccountMode::User => "user",
            AccountMode::Mm => "mm",
        }
    }
}

/// The pin count of a page of the file.
struct PfnPins {
    /// How many [`Pages`] of the file hold a pin of the page.
    pins: usize,
    /// Whether the page is charged to `RLIMIT_MEMLOCK`, which it is unless the task that pinned
    /// it first had `CAP_IPC_LOCK`.
    charged: bool,
}

/// The state of [`PinAccount`] under its lock.
///
/// # Invariants
///
/// - `pfns` has an entry for each page that at least one live [`Pages`] of the file has
///   pinned, with `pins` the number of such [`Pages`] (a [`Pages`] that pinned the page more
///   than once, through two user addresses, counts once), and no other entries.
/// - `charged` is the number of entries of `pfns` with `charged` set. Exactly `charged` pages
///   are charged for the file, in `mode`, and `pfns.len()` pages are counted in the
///   `pinned_vm` of `mm`.
/// - `mode` only changes while `pfns` is empty.
struct PinAccountInner {
    pfns: RBTree<usize, PfnPins>,
    charged: usize,
    mode: AccountMode,
}

/// The per-file table of pinned pages, which charges each page once, whatever the number of
/// IOASes and mappings of the file that pin it.
#[pin_data]
pub(crate) struct PinAccount {
    #[pin]
    inner: Mutex<PinAccountInner>,
    /// The user charged in [`AccountMode::User`]: the user of the task that opened the file.
    user: ARef<User>,
    /// The address space charged in [`AccountMode::Mm`] and counting the pinned pages in
    /// `pinned_vm`: that of the task that opened the file.
    mm: Option<ARef<Mm>>,
}

/// What fdinfo shows of a [`PinAccount`].
pub(crate) struct PinStats {
    /// The number of distinct pages pinned by the file.
    pub(crate) pinned: usize,
    /// The number of them charged to `RLIMIT_MEMLOCK`.
    pub(crate) charged: usize,
    /// Where they are charged.
    pub(crate) mode: AccountMode,
}

impl PinAccount {
    /// Creates the empty table of a file opened by the current task.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mm = Mm::current();
        Arc::pin_init(
            try_pin_init!(PinAccount {
                inner <- new_mutex!(PinAccountInner {
                    pfns: RBTree::new(),
                    charged: 0,
                    mode: AccountMode::User,
                }),
                user: User::current(),
                mm,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Returns the pinning statistics of the file.
    pub(crate) fn stats(&self) -> PinStats {
        let inner = self.inner.lock();
        PinStats {
            pinned: inner.pfns.iter().count(),
            charged: inner.charged,
            mode: inner.mode,
        }
    }

    /// Returns the accounting mode, `IOMMU_OPTION_RLIMIT_MODE`.
    pub(crate) fn mode(&self) -> AccountMode {
        self.inner.lock().mode
    }

    /// Sets the accounting mode. Fails with [`EBUSY`] while pages are pinned.
    pub(crate) fn set_mode(&self, mode: AccountMode) -> Result {
        let mut inner = self.inner.lock();
        if !inner.pfns.is_empty() {
            return Err(EBUSY);
        }
        // INVARIANT: `pfns` is empty.
        inner.mode = mode;
        Ok(())
    }

    /// Charges `npages` pages in `mode`.
    fn charge(&self, mode: AccountMode, npages: usize) -> Result {
        if npages == 0 {
            return Ok(());
        }
        match mode {
            AccountMode::User => self
                .user
                .try_charge_locked_vm(npages, memlock_limit_pages()),
            AccountMode::Mm => match &self.mm {
                Some(mm) => mm.account_locked_vm(npages, true),
                None => Ok(()),
            },
        }
    }

    /// Uncharges `npages` pages charged with [`PinAccount::charge`] in `mode`.
    fn uncharge(&self, mode: AccountMode, npages: usize) {
        if npages == 0 {
            return;
        }
        match mode {
            AccountMode::User => self.user.uncharge_locked_vm(npages),
            AccountMode::Mm => {
                if let Some(mm) = &self.mm {
                    // Uncharging does not fail.
                    let _ = mm.account_locked_vm(npages, false);
                }
            }
        }
    }

    /// Adds the pages of `pins` to the table, charging those the file had not pinned yet.
    ///
    /// `pfns` are the distinct pfns of `pins`, sorted. Fails with [`ENOMEM`] if the charge
    /// exceeds `RLIMIT_MEMLOCK` (or memory runs out), leaving the table as it was.
    fn add(&self, pfns: &[usize]) -> Result {
        let mut inner = self.inner.lock();

        let new = pfns
            .iter()
            .filter(|pfn| inner.pfns.get(pfn).is_none())
            .count();
        // Memory for the new entries, so that nothing fails once pages are charged.
        let mut nodes = KVVec::with_capacity(new, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..new {
            nodes.push(
                RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
                GFP_KERNEL_ACCOUNT,
            )?;
        }

        // iommufd does not charge a task with `CAP_IPC_LOCK` (`IOPT_PAGES_ACCOUNT_NONE`).
        let charge = !capable(Capability::IPC_LOCK);
        let mode = inner.mode;
        if charge {
            self.charge(mode, new)?;
        }

        for &pfn in pfns {
            if let Some(entry) = inner.pfns.get_mut(&pfn) {
                entry.pins += 1;
            } else if let Some(node) = nodes.pop() {
                inner.pfns.insert(node.into_node(
                    pfn,
                    PfnPins {
                        pins: 1,
                        charged: charge,
                    },
                ));
            }
        }
        if charge {
            inner.charged += new;
        }
        if let Some(mm) = &self.mm {
            mm.add_pinned_vm(new);
        }
        // INVARIANT: Each of `pfns` gained a pin; the `new` entries are charged iff `charge`, and
        // `charged` and `pinned_vm` were updated to match.
        Ok(())
    }

    /// Removes the pages `pfns` of a [`Pages`] being released from the table, uncharging those
    /// no other [`Pages`] of the file pins.
    fn remove(&self, pfns: &[usize]) {
        let mut inner = self.inner.lock();
        let mut uncharged = 0;
        let mut removed = 0;
        for pfn in pfns {
            let Some(mut entry) = inner.pfns.find_mut(pfn) else {
                kernel::warn_on!(true);
                continue;
            };
            entry.get_mut().pins -= 1;
            if entry.get().pins == 0 {
                if entry.remove().charged {
                    uncharged += 1;
                }
                removed += 1;
            }
        }
        // INVARIANT: The entries of `pfns` lost a pin; those left without pins are removed, and
        // `charged`, the charge and `pinned_vm` drop by as much.
        inner.charged -= uncharged;
        let mode = inner.mode;
        drop(inner);
        self.uncharge(mode, uncharged);
        if let Some(mm) = &self.mm {
            mm.sub_pinned_vm(removed);
        }
    }
}

/// A range of user memory pinned for the mappings of a file, the analogue of iommufd's
/// `struct iopt_pages`.
///
/// It is created by `IOMMU_IOAS_MAP` and shared by reference counting between the area it was
/// created for and the areas `IOMMU_IOAS_COPY` made from it. Dropping the last reference
/// uncharges and unpins the pages.
///
/// # Invariants
///
/// The sorted distinct pfns of `pins` are `pfns`, and each of them holds a pin in the table of
/// `account`.
pub(crate) struct Pages {
    account: Arc<PinAccount>,
    /// The page aligned user address, or memfd offset, of the first page: a kernel-chosen IOVA
    /// for the pages keeps its alignment.
    addr: u64,
    /// The distinct pfns of `pins`, sorted.
    pfns: KVVec<usize>,
    pins: LongTermPins,
}

impl Pages {
    /// Pins the user memory that covers `length` bytes at `uptr`, like `iopt_alloc_user_pages()`
    /// followed by the pinning `iopt_area_fill_domains()` does.
    ///
    /// Returns the pages and the offset of `uptr` in the first page. Fails with [`EFAULT`] if the
    /// memory is not mapped (or not writable, when `writable` is set), and with [`ENOMEM`] when
    /// the pages exceed `RLIMIT_MEMLOCK`.
    pub(crate) fn pin(
        account: &Arc<PinAccount>,
        uptr: usize,
        length: usize,
        writable: bool,
    ) -> Result<(Arc<Self>, usize)> {
        let offset = uptr % PAGE_SIZE;
        let start = uptr - offset;
        // `iopt_alloc_pages()` checks that this cannot overflow.
        let npages = (offset + length).div_ceil(PAGE_SIZE);

        let pins = LongTermPins::pin_user_pages_fast(
            UserPtr::from_addr(start),
            npages,
            writable,
            GFP_KERNEL_ACCOUNT,
        )?;
        // CAST: User addresses fit in a `u64`.
        Ok((Self::new(account, pins, start as u64)?, offset))
    }

    /// Pins the pages of the memfd `file` that cover `length` bytes at offset `start`, like
    /// `iopt_alloc_file_pages()` followed by the pinning `iopt_area_fill_domains()` does.
    ///
    /// Returns the pages and the offset of `start` in the first page. Fails with [`EINVAL`] if
    /// `file` is not a memfd or the range goes beyond its size, and with [`ENOMEM`] when the
    /// pages exceed `RLIMIT_MEMLOCK`.
    pub(crate) fn pin_memfd(
        account: &Arc<PinAccount>,
        file: &LocalFile,
        start: u64,
        length: usize,
        writable: bool,
    ) -> Result<(Arc<Self>, usize)> {
        // CAST: The remainder is below `PAGE_SIZE`.
        let offset = (start % PAGE_SIZE as u64) as usize;
        let first = start - offset as u64;
        // `iopt_alloc_pages()` checks that this cannot overflow.
        let npages = (offset + length).div_ceil(PAGE_SIZE);

        let pins =
            LongTermPins::pin_memfd(file, first, npages, writable, GFP_KERNEL_ACCOUNT)?;
        Ok((Self::new(account, pins, first)?, offset))
    }

    /// Adds the pages of `pins`, whose first page is at the user address or memfd offset
    /// `addr`, to the table of `account`.
    fn new(account: &Arc<PinAccount>, pins: LongTermPins, addr: u64) -> Result<Arc<Self>> {
        let mut pfns = KVVec::with_capacity(pins.len(), GFP_KERNEL_ACCOUNT)?;
        for pfn in pins.pfns() {
            pfns.push(pfn, GFP_KERNEL_ACCOUNT)?;
        }
        pfns.sort_unstable();
        // Remove duplicates: a page mapped at two user addresses of the range.
        let mut distinct = 0;
        for i in 0..pfns.len() {
            if distinct == 0 || pfns[i] != pfns[distinct - 1] {
                pfns[distinct] = pfns[i];
                distinct += 1;
            }
        }
        pfns.truncate(distinct);

        // On failure `pins` is dropped, which unpins the pages.
        account.add(&pfns)?;

        // INVARIANT: `pfns` are the pfns of `pins` and were just added to `account`. If the
        // allocation fails, the `Drop` of `Pages` removes them again.
        Ok(Arc::new(
            Pages {
                account: account.clone(),
                addr,
                pfns,
                pins,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// The page aligned user address, or memfd offset, the pages start at.
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    /// Whether the pages are pinned for writing, so that areas may map them writable.
    pub(crate) fn writable(&self) -> bool {
        self.pins.is_writable()
    }

    /// The number of bytes the pages span.
    pub(crate) fn len_bytes(&self) -> usize {
        self.pins.len() * PAGE_SIZE
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // By the type invariants `pfns` are in the table. The pins themselves are released
        // right after, when `pins` is dropped.
        self.account.remove(&self.pfns);
    }
}
