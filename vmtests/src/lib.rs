//! Programs (and their testable logic) that run inside the ioasid test VM.
//!
//! * `ioasid-smoke` — iommufd ABI smoke checks, TAP-like output, run against
//!   `/dev/iommu` (mainline) and `/dev/ioasid` (this project) alike; with
//!   `--accounting`, the pinning and RLIMIT_MEMLOCK checks of `/dev/ioasid`.
//! * `vfio-edu-workload` — real DMA with QEMU's edu device through VFIO with
//!   the iommufd, ioasid or type1 backend; prints a JSON summary line.
//! * `ioasid-difftest` — the same ioctl sequences against `/dev/iommu` and
//!   `/dev/ioasid`, results compared call by call.
//! * `ioasid-bench` — MAP+UNMAP and COPY timings of `/dev/ioasid` (with and
//!   without a domain) against iommufd (with and without a domain) and VFIO
//!   type1, in one run.
//! * `kvm-vfio-workload` — gives the edu device's VFIO file (group or cdev) to
//!   a KVM VM and takes it back; `check-top-kvm` checks what ioasid-top saw
//!   of KVM's non-coherent DMA (wbinvd) state meanwhile.
//! * `vfio-double-map` — maps one buffer for two devices through two type1 containers or two
//!   IOASes, so that type1 and iommufd charge it twice and /dev/ioasid once.
//! * `vfio-orphan-pins` — maps for edu, forks and exits: the child holds the pins of a
//!   process that is gone.
//! * `vfio-failed-map` — a map for edu that the test kernel's fail_page_alloc makes
//!   `iommu_map` fail: ENOMEM, nothing left pinned or charged.
//! * `check-audit` — checks that `ioasid-top audit --once --json` reported
//!   exactly the findings a scenario provokes, with the matching exit status.
//!
//! All ioctl numbers and structures come from `ioasid-uapi`.

pub mod accounting;
pub mod attachcheck;
pub mod auditcheck;
pub mod bench;
pub mod devices;
pub mod difftest;
pub mod dmabuf;
pub mod domaincheck;
pub mod doublemap;
pub mod edu;
pub mod errno;
pub mod failmap;
pub mod hold;
pub mod kvm;
pub mod kvmcheck;
pub mod memfd;
pub mod orphan;
pub mod overhead;
pub mod pincheck;
pub mod smoke;
pub mod sysfs;
pub mod tap;
pub mod topcheck;
pub mod vfio;
pub mod workload;

/// The version of ioasid-top's JSON Lines contract (`docs/json-lines.md`) these checks read.
pub const TOP_JSON_VERSION: u64 = 2;
