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
    fs::LocalFile,
    iommu::domain::PinnedPages,
    mm::{
        account::{
            memlock_limit_pages,
            User, //
        },
        pin::LongTermPins,
        Mm,
    },
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

/// A run of consecutive page frames of the file, pinned alike.
struct PfnRun {
    /// The number of page frames.
    npages: usize,
    /// How many [`Pages`] of the file hold a pin of each of the frames.
    pins: usize,
    /// Whether the frames are charged to `RLIMIT_MEMLOCK`, which they are unless the task that
    /// pinned them first had `CAP_IPC_LOCK`.
    charged: bool,
}

/// The state of [`PinAccount`] under its lock.
///
/// The table is kept in runs of page frames rather than per page, so that memory backed by
/// huge pages, or otherwise physically contiguous, costs a node per run and not per page.
///
/// # Invariants
///
/// - `runs`, keyed by first pfn, are disjoint, and cover exactly the pages that at least one
///   live [`Pages`] of the file has pinned, `pins` being the number of such [`Pages`] for each
///   page of the run (a [`Pages`] that pinned a page more than once, through two user
///   addresses, counts once).
/// - For each run `[first, first + npages)` of each live [`Pages`] of the file, a run of the
///   table starts at `first`, and none contains both `first + npages - 1` and `first + npages`:
///   a [`Pages`] covers whole runs, so releasing it never splits one.
/// - `pinned` is the number of pages the runs cover and `charged` the number of them in runs
///   with `charged` set. Exactly `charged` pages are charged for the file, in `mode`, and
///   `pinned` pages are counted in the `pinned_vm` of `mm`.
/// - `mode` only changes while `runs` is empty.
struct PinAccountInner {
    runs: RBTree<usize, PfnRun>,
    pinned: usize,
    charged: usize,
    mode: AccountMode,
}

/// Nodes for new runs, reserved before anything is charged so that entering runs cannot fail.
/// The first one is kept apart: a mapping of a single page takes no vector.
struct RunNodes {
    first: Option<RBTreeNodeReservation<usize, PfnRun>>,
    rest: KVVec<RBTreeNodeReservation<usize, PfnRun>>,
}

impl RunNodes {
    fn reserve(count: usize) -> Result<Self> {
        let mut nodes = RunNodes {
            first: None,
            rest: KVVec::with_capacity(count.saturating_sub(1), GFP_KERNEL_ACCOUNT)?,
        };
        if count > 0 {
            nodes.first = Some(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?);
        }
        for _ in 1..count {
            nodes.rest.push(
                RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
                GFP_KERNEL_ACCOUNT,
            )?;
        }
        Ok(nodes)
    }

    fn take(&mut self) -> Option<RBTreeNodeReservation<usize, PfnRun>> {
        self.rest.pop().or_else(|| self.first.take())
    }
}

impl PinAccountInner {
    /// Returns `(first, npages)` of the run that contains `pfn`, else of the first run after it.
    fn run_at_or_after(&self, pfn: usize) -> Option<(usize, usize)> {
        let cursor = self.runs.cursor_lower_bound(&pfn);
        let before = match &cursor {
            Some(cursor) => {
                let (&first, run) = cursor.current();
                if first == pfn {
                    return Some((first, run.npages));
                }
                cursor.peek_prev().map(|(&first, run)| (first, run.npages))
            }
            None => self.runs.cursor_back().map(|cursor| {
                let (&first, run) = cursor.current();
                (first, run.npages)
            }),
        };
        if let Some((first, npages)) = before {
            if pfn - first < npages {
                return Some((first, npages));
            }
        }
        cursor.map(|cursor| {
            let (&first, run) = cursor.current();
            (first, run.npages)
        })
    }

    /// Returns `(first, npages)` of the first run that starts at or after `pfn`, if any.
    fn run_from(&self, pfn: usize) -> Option<(usize, usize)> {
        let cursor = self.runs.cursor_lower_bound(&pfn)?;
        let (&first, run) = cursor.current();
        Some((first, run.npages))
    }

    /// Walks the table along `runs`. Returns the number of pages of `runs` the table does not
    /// cover, and the number of nodes covering them takes: one per gap, one per split where a
    /// range starts or ends inside a run.
    ///
    /// With `cover`, also covers them: adds a pin to each page of `runs`, entering the gaps as
    /// runs charged as `cover` says and splitting the table's runs where `runs` start and end,
    /// with nodes from `cover`. One walk for both, so that covering takes exactly the nodes
    /// counting said.
    fn walk(
        &mut self,
        runs: &[(usize, usize)],
        mut cover: Option<(&mut RunNodes, bool)>,
    ) -> (usize, usize) {
        let (mut new, mut nodes) = (0, 0);
        for &(first, npages) in runs {
            let end = first + npages;
            let mut pfn = first;
            let mut next = self.run_at_or_after(first);
            while pfn < end {
                let Some((run_first, len)) = next.filter(|&(run_first, _)| run_first < end) else {
                    new += end - pfn;
                    nodes += 1;
                    if let Some((pool, charged)) = cover.as_mut() {
                        self.insert(
                            pool,
                            pfn,
                            PfnRun {
                                npages: end - pfn,
                                pins: 1,
                                charged: *charged,
                            },
                        );
                    }
                    break;
                };
                if run_first > pfn {
                    new += run_first - pfn;
                    nodes += 1;
                    if let Some((pool, charged)) = cover.as_mut() {
                        let gap = PfnRun {
                            npages: run_first - pfn,
                            pins: 1,
                            charged: *charged,
                        };
                        self.insert(pool, pfn, gap);
                    }
                }
                // The part of the run within the range: `[start, start + len)`.
                let (start, len) = if run_first < pfn {
                    nodes += 1;
                    if let Some((pool, _)) = cover.as_mut() {
                        self.split(pool, run_first, pfn - run_first);
                    }
                    (pfn, run_first + len - pfn)
                } else {
                    (run_first, len)
                };
                if start + len > end {
                    nodes += 1;
                    if let Some((pool, _)) = cover.as_mut() {
                        self.split(pool, start, end - start);
                    }
                }
                if cover.is_some() {
                    if let Some(run) = self.runs.get_mut(&start) {
                        run.pins += 1;
                    }
                }
                pfn = (start + len).min(end);
                if pfn < end {
                    next = self.run_from(pfn);
                }
            }
        }
        (new, nodes)
    }

    /// Counts `new` pages that gained their first pin, charged iff `charge`, in `pinned`,
    /// `charged` and the `pinned_vm` of the address space of `account`.
    fn account_new(&mut self, account: &PinAccount, new: usize, charge: bool) {
        self.pinned += new;
        if charge {
            self.charged += new;
        }
        if let Some(mm) = &account.mm {
            mm.add_pinned_vm(new);
        }
    }

    /// Enters the run `first` with a node of `nodes`.
    fn insert(&mut self, nodes: &mut RunNodes, first: usize, run: PfnRun) {
        match nodes.take() {
            Some(node) => {
                self.runs.insert(node.into_node(first, run));
            }
            // `walk()` counts every node it takes when covering.
            None => {
                kernel::warn_on!(true);
            }
        }
    }

    /// Cuts the run at `first` after `keep` pages, the rest becoming a run of its own.
    fn split(&mut self, nodes: &mut RunNodes, first: usize, keep: usize) {
        let Some(run) = self.runs.get_mut(&first) else {
            return;
        };
        let tail = PfnRun {
            npages: run.npages - keep,
            pins: run.pins,
            charged: run.charged,
        };
        run.npages = keep;
        self.insert(nodes, first + keep, tail);
    }

    /// Drops a pin of each page of `runs`, the runs of a [`Pages`] being released, and removes
    /// the runs left without pins. Returns the number of pages removed and of those uncharged.
    fn uncover(&mut self, runs: &[(usize, usize)]) -> (usize, usize) {
        let (mut removed, mut uncharged) = (0, 0);
        for &(first, npages) in runs {
            let end = first + npages;
            let mut pfn = first;
            // By the type invariants, the runs of the table from `first` tile `[first, end)`.
            while pfn < end {
                let Some(run) = self.runs.get_mut(&pfn) else {
                    kernel::warn_on!(true);
                    break;
                };
                let len = run.npages;
                run.pins -= 1;
                if run.pins == 0 {
                    if let Some(run) = self.runs.remove(&pfn) {
                        removed += len;
                        if run.charged {
                            uncharged += len;
                        }
                    }
                }
                pfn += len;
            }
        }
        (removed, uncharged)
    }
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
                    runs: RBTree::new(),
                    pinned: 0,
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
            pinned: inner.pinned,
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
        if inner.pinned != 0 {
            return Err(EBUSY);
        }
        // INVARIANT: `runs` is empty.
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

    /// Adds a pin of each page of `runs` to the table, charging the pages the file had not
    /// pinned yet.
    ///
    /// `runs` are the page frames of a new [`Pages`] as `(first pfn, number)`, sorted, disjoint
    /// and not adjacent. Fails with [`ENOMEM`] if the charge exceeds `RLIMIT_MEMLOCK` (or memory
    /// runs out), leaving the table as it was.
    fn add(&self, runs: &[(usize, usize)]) -> Result {
        // iommufd does not charge a task with `CAP_IPC_LOCK` (`IOPT_PAGES_ACCOUNT_NONE`).
        let charge = !capable(Capability::IPC_LOCK);
        let mut inner = self.inner.lock();
        let mode = inner.mode;

        // One run the file has not pinned yet, the common case, is entered as it is: one lookup
        // instead of a walk to count nodes and another to cover.
        if let &[(first, npages)] = runs {
            let end = first + npages;
            if inner
                .run_at_or_after(first)
                .is_none_or(|(run_first, _)| run_first >= end)
            {
                let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
                if charge {
                    self.charge(mode, npages)?;
                }
                let run = PfnRun {
                    npages,
                    pins: 1,
                    charged: charge,
                };
                inner.runs.insert(node.into_node(first, run));
                inner.account_new(self, npages, charge);
                // INVARIANT: The pages of `runs` had no run and are now one, charged iff
                // `charge`, and the counts were updated to match.
                return Ok(());
            }
        }

        let (new, needed) = inner.walk(runs, None);
        // Memory for the new runs, so that nothing fails once pages are charged.
        let mut nodes = RunNodes::reserve(needed)?;

        if charge {
            self.charge(mode, new)?;
        }

        inner.walk(runs, Some((&mut nodes, charge)));
        inner.account_new(self, new, charge);
        // INVARIANT: Each page of `runs` gained a pin, in runs that start and end where `runs`
        // do; the `new` pages are charged iff `charge`, and `pinned`, `charged` and `pinned_vm`
        // were updated to match.
        Ok(())
    }

    /// Removes the pins of a [`Pages`] being released, given as the `runs` it was added with,
    /// uncharging the pages no other [`Pages`] of the file pins.
    fn remove(&self, runs: &[(usize, usize)]) {
        let mut inner = self.inner.lock();
        let (removed, uncharged) = inner.uncover(runs);
        // INVARIANT: The pages of `runs` lost a pin; the runs left without pins are removed, and
        // `pinned`, `charged`, the charge and `pinned_vm` drop by as much.
        inner.pinned -= removed;
        inner.charged -= uncharged;
        let mode = inner.mode;
        drop(inner);
        self.uncharge(mode, uncharged);
        if let Some(mm) = &self.mm {
            mm.sub_pinned_vm(removed);
        }
    }
}

/// The page frames of a [`Pages`] as runs `(first pfn, number)`.
///
/// A single run is kept inline: the pages of a small mapping, or of memory backed by a huge
/// page, are one run, and mapping them then allocates no vector.
enum PfnRuns {
    One((usize, usize)),
    Many(KVVec<(usize, usize)>),
}

impl PfnRuns {
    /// The runs of the page frames `pfns`, in the order of the pages, merged into runs that are
    /// sorted, disjoint and not adjacent: a page mapped at two user addresses counts once.
    fn of(mut pfns: impl Iterator<Item = usize>) -> Result<Self> {
        let Some(first) = pfns.next() else {
            return Ok(PfnRuns::Many(KVVec::new()));
        };
        let mut one = (first, 1);
        let mut runs: KVVec<(usize, usize)> = loop {
            match pfns.next() {
                None => return Ok(PfnRuns::One(one)),
                Some(pfn) if one.0 + one.1 == pfn => one.1 += 1,
                Some(pfn) => {
                    let mut runs = KVVec::new();
                    runs.push(one, GFP_KERNEL_ACCOUNT)?;
                    runs.push((pfn, 1), GFP_KERNEL_ACCOUNT)?;
                    break runs;
                }
            }
        };
        for pfn in pfns {
            match runs.last_mut() {
                Some((first, npages)) if *first + *npages == pfn => *npages += 1,
                _ => runs.push((pfn, 1), GFP_KERNEL_ACCOUNT)?,
            }
        }
        runs.sort_unstable();
        let mut merged = 0;
        for i in 0..runs.len() {
            let (first, npages) = runs[i];
            if merged > 0 {
                let (last_first, last_npages) = &mut runs[merged - 1];
                if first <= *last_first + *last_npages {
                    *last_npages = (*last_npages).max(first + npages - *last_first);
                    continue;
                }
            }
            runs[merged] = (first, npages);
            merged += 1;
        }
        runs.truncate(merged);
        Ok(PfnRuns::Many(runs))
    }

    fn as_slice(&self) -> &[(usize, usize)] {
        match self {
            PfnRuns::One(run) => core::slice::from_ref(run),
            PfnRuns::Many(runs) => runs,
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
/// `pfn_runs` are the page frames of `pins` as runs `(first pfn, number)`, sorted, disjoint and
/// not adjacent, and each of their pages holds a pin in the table of `account`.
pub(crate) struct Pages {
    account: Arc<PinAccount>,
    /// The page aligned user address, or memfd offset, of the first page: a kernel-chosen IOVA
    /// for the pages keeps its alignment.
    addr: u64,
    /// The page frames of `pins`, as runs `(first pfn, number)`.
    pfn_runs: PfnRuns,
    /// The pins. The IOMMU mappings of the pages hold a reference to the [`Pages`], which keeps
    /// them until the pages are unmapped.
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

        let pins = LongTermPins::pin_memfd(file, first, npages, writable, GFP_KERNEL_ACCOUNT)?;
        Ok((Self::new(account, pins, first)?, offset))
    }

    /// Adds the pages of `pins`, whose first page is at the user address or memfd offset
    /// `addr`, to the table of `account`.
    fn new(account: &Arc<PinAccount>, pins: LongTermPins, addr: u64) -> Result<Arc<Self>> {
        // On failure `pins` is dropped, which unpins the pages.
        let runs = PfnRuns::of(pins.pfns())?;
        account.add(runs.as_slice())?;

        // INVARIANT: `runs` are the page frames of `pins` and were just added to `account`. If
        // the allocation fails, the `Drop` of `Pages` removes them again.
        Ok(Arc::new(
            Pages {
                account: account.clone(),
                addr,
                pfn_runs: runs,
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

impl PinnedPages for Pages {
    fn pins(&self) -> &LongTermPins {
        &self.pins
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // By the type invariants `pfn_runs` are in the table. The pins themselves are released
        // right after, when `pins` is dropped.
        self.account.remove(self.pfn_runs.as_slice());
    }
}
