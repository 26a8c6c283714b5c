//! What is already pinned when ioasid-top starts, so it does not start blind:
//! events only show what changes after attach.
//!
//! For every process: `VmPin` (`mm->pinned_vm`: iommufd and /dev/ioasid count
//! their pinned pages there) and `VmLck` (`mm->locked_vm`: VFIO type1 and the
//! `mm` account modes charge it) of `/proc/<pid>/status`; and for every open
//! file whose `/proc/<pid>/fd/<fd>` link is `/dev/ioasid`, its fdinfo
//! (pinned and charged pages, account mode, IOAS areas; format in
//! `ioasid_uapi::fdinfo`). A process is listed when one of these is non-zero.
//!
//! Processes come and go while /proc is read: a process or fd that vanishes
//! is skipped; other errors of one process are counted, not fatal.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use ioasid_uapi::fdinfo::{self, IoasidFdinfo};

/// The link target of a /dev/ioasid file in /proc/<pid>/fd.
pub const DEV_IOASID: &str = "/dev/ioasid";

/// One open /dev/ioasid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoasidFile {
    pub fd: u32,
    pub info: IoasidFdinfo,
}

/// Start-up state of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStart {
    pub comm: String,
    /// `VmPin` in pages.
    pub vm_pin_pages: u64,
    /// `VmLck` in pages.
    pub vm_lck_pages: u64,
    pub ioasid_files: Vec<IoasidFile>,
}

impl ProcStart {
    /// Distinct pages pinned by the process's /dev/ioasid files (per file).
    pub fn ioasid_pinned_pages(&self) -> u64 {
        self.ioasid_files.iter().map(|f| f.info.pinned_pages).sum()
    }
    pub fn ioasid_charged_pages(&self) -> u64 {
        self.ioasid_files.iter().map(|f| f.info.charged_pages).sum()
    }
}

/// The start-up state of the system (or of the `--pid` process).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartState {
    pub procs: BTreeMap<u32, ProcStart>,
    /// Processes whose status or fds could not be read (other than vanishing).
    pub unreadable: u64,
}

/// `Name`, `VmPin` and `VmLck` (kB) of a status file.
pub fn parse_status(text: &str) -> Result<(String, u64, u64), String> {
    let mut name = String::new();
    let (mut pin, mut lck) = (0, 0);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = || -> Result<u64, String> {
            let v = value.trim();
            let n = v.strip_suffix(" kB").unwrap_or(v).trim();
            n.parse()
                .map_err(|e| format!("{key}: {v:?} is not a number of kB: {e}"))
        };
        match key {
            "Name" => name = value.trim().to_owned(),
            "VmPin" => pin = kib()?,
            "VmLck" => lck = kib()?,
            _ => {}
        }
    }
    Ok((name, pin, lck))
}

fn vanished(e: &io::Error) -> bool {
    // ESRCH: the process exited between readdir and read.
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads one process. Ok(None): it vanished.
fn read_proc(dir: &Path, page_size: u64) -> anyhow::Result<Option<ProcStart>> {
    let status = match fs::read_to_string(dir.join("status")) {
        Ok(s) => s,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}/status", dir.display())),
    };
    let (comm, pin_kib, lck_kib) = parse_status(&status)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parsing {}/status", dir.display()))?;
    let mut p = ProcStart {
        comm,
        vm_pin_pages: pin_kib * 1024 / page_size,
        vm_lck_pages: lck_kib * 1024 / page_size,
        ioasid_files: Vec::new(),
    };
    let fd_dir = dir.join("fd");
    let entries = match fs::read_dir(&fd_dir) {
        Ok(e) => e,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", fd_dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", fd_dir.display()))?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // The fd may be closed by now: skip it.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target != Path::new(DEV_IOASID) {
            continue;
        }
        let fdinfo_path = dir.join("fdinfo").join(fd.to_string());
        let text = match fs::read_to_string(&fdinfo_path) {
            Ok(t) => t,
            Err(e) if vanished(&e) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", fdinfo_path.display()));
            }
        };
        let info =
            fdinfo::parse(&text).with_context(|| format!("parsing {}", fdinfo_path.display()))?;
        p.ioasid_files.push(IoasidFile { fd, info });
    }
    Ok(Some(p))
}

/// The processes of `proc_root` (normally /proc); with `pid`, only that one.
pub fn proc_pids(proc_root: &Path, pid: Option<u32>) -> anyhow::Result<Vec<u32>> {
    Ok(match pid {
        Some(p) => vec![p],
        None => fs::read_dir(proc_root)
            .with_context(|| format!("listing {}", proc_root.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    })
}

/// Scans `proc_root` (normally /proc). `pid`: only that process.
pub fn scan(proc_root: &Path, pid: Option<u32>, page_size: u64) -> anyhow::Result<StartState> {
    let mut state = StartState::default();
    for pid in proc_pids(proc_root, pid)? {
        let dir: PathBuf = proc_root.join(pid.to_string());
        match read_proc(&dir, page_size) {
            Ok(Some(p)) => {
                if p.vm_pin_pages > 0 || p.vm_lck_pages > 0 || !p.ioasid_files.is_empty() {
                    state.procs.insert(pid, p);
                }
            }
            Ok(None) => {}
            Err(e) => {
                state.unreadable += 1;
                eprintln!("ioasid-top: warning: start-up state of pid {pid}: {e:#}");
            }
        }
    }
    Ok(state)
}

/// The system's page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("ioasid-top-test-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).expect("create temp dir");
            TmpDir(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_proc(root: &Path, pid: u32, status: &str, fds: &[(u32, &str, &str)]) {
        let d = root.join(pid.to_string());
        fs::create_dir_all(d.join("fd")).expect("fd dir");
        fs::create_dir_all(d.join("fdinfo")).expect("fdinfo dir");
        fs::write(d.join("status"), status).expect("status");
        for (fd, target, info) in fds {
            symlink(target, d.join("fd").join(fd.to_string())).expect("fd link");
            fs::write(d.join("fdinfo").join(fd.to_string()), info).expect("fdinfo");
        }
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tvfio-edu-worklo\nVmLck:\t     256 kB\nVmPin:\t      64 kB\nVmPTE:\t 4 kB\n";
        assert_eq!(parse_status(s), Ok(("vfio-edu-worklo".into(), 64, 256)));
        // Kernel threads have no Vm* lines.
        assert_eq!(
            parse_status("Name:\tkthreadd\n"),
            Ok(("kthreadd".into(), 0, 0))
        );
        assert!(parse_status("VmPin:\tlots kB\n").is_err());
    }

    #[test]
    fn scan_finds_ioasid_files_and_pinned_processes() {
        let t = TmpDir::new("scan");
        let info = "pos:\t0\nioasid-account-mode:\tuser\nioasid-pinned-pages:\t32\n\
ioasid-charged-pages:\t32\nioasid-object:\t1 ioas\nioasid-area:\t1 0x100000 0x20000 rw\n";
        fake_proc(
            &t.0,
            10,
            "Name:\tworkload\nVmLck:\t0 kB\nVmPin:\t128 kB\n",
            &[(3, "/dev/ioasid", info), (4, "/dev/null", "pos:\t0\n")],
        );
        fake_proc(
            &t.0,
            11,
            "Name:\tidle\nVmLck:\t0 kB\nVmPin:\t0 kB\n",
            &[(0, "/dev/null", "")],
        );
        fake_proc(
            &t.0,
            12,
            "Name:\tqemu\nVmLck:\t8192 kB\nVmPin:\t0 kB\n",
            &[],
        );
        fs::create_dir_all(t.0.join("self")).expect("non-numeric entry");

        let s = scan(&t.0, None, 4096).expect("scan");
        assert_eq!(s.unreadable, 0);
        assert_eq!(s.procs.keys().copied().collect::<Vec<_>>(), [10, 12]);
        let w = &s.procs[&10];
        assert_eq!(
            (w.comm.as_str(), w.vm_pin_pages, w.vm_lck_pages),
            ("workload", 32, 0)
        );
        assert_eq!(w.ioasid_files.len(), 1);
        assert_eq!(w.ioasid_files[0].fd, 3);
        assert_eq!(w.ioasid_pinned_pages(), 32);
        assert_eq!(w.ioasid_charged_pages(), 32);
        assert_eq!(w.ioasid_files[0].info.areas[0].length, 0x20000);
        assert_eq!(s.procs[&12].vm_lck_pages, 2048);

        // --pid: only that process; a pid that does not exist is no error.
        let one = scan(&t.0, Some(12), 4096).expect("scan one");
        assert_eq!(one.procs.keys().copied().collect::<Vec<_>>(), [12]);
        assert!(scan(&t.0, Some(99), 4096).expect("gone").procs.is_empty());
    }

    #[test]
    fn a_bad_fdinfo_makes_the_process_unreadable_not_the_scan() {
        let t = TmpDir::new("bad");
        fake_proc(
            &t.0,
            20,
            "Name:\tx\nVmPin:\t4 kB\n",
            &[(
                5,
                "/dev/ioasid",
                "ioasid-account-mode:\tuser\nioasid-pinned-pages:\tmany\n",
            )],
        );
        fake_proc(&t.0, 21, "Name:\ty\nVmPin:\t4 kB\n", &[]);
        let s = scan(&t.0, None, 4096).expect("scan");
        assert_eq!(s.unreadable, 1);
        assert_eq!(s.procs.keys().copied().collect::<Vec<_>>(), [21]);
        assert!(scan(&t.0.join("nope"), None, 4096).is_err());
    }
}
