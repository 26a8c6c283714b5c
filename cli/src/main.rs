//! ioasid-top: what is being mapped into the IOMMU, per process and domain.

mod aggregate;
mod args;
mod audit;
mod btf;
mod event;
mod jsonl;
mod loader;
mod phys;
mod pins;
mod privs;
mod procfiles;
mod ranges;
mod startstate;
mod table;

use std::{
    io::{self, BufWriter, Write},
    os::fd::{AsRawFd as _, RawFd},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use clap::Parser as _;

use crate::{
    aggregate::{Aggregator, Filter},
    args::Args,
    jsonl::Summary,
    loader::{Attach, Session},
};

/// Set by SIGINT/SIGTERM: finish the current round, print, restore, exit.
static STOP: AtomicBool = AtomicBool::new(false);

/// Records handled per drain before looking at the clock again.
const DRAIN_BATCH: usize = 65_536;

/// Drains of [`DRAIN_BATCH`] records at most after Ctrl-C or the end of `--once`, for the
/// records already in the ring (it holds fewer than one batch).
const FINAL_DRAINS_MAX: usize = 2;

/// How long the reader sleeps between drains. It does not wait in poll(2) on the ring
/// buffer: the kernel wakes a waiting reader whenever a record arrives at a ring it had
/// emptied, so a reader that keeps up is woken once per record, and each wakeup (an
/// irq_work, then an IPI to the reader's CPU) is paid by the process that mapped. Reading
/// every 10 ms costs at most 100 wakeups a second; the 4 MiB ring holds ~43,000 records,
/// so it overflows only above ~4 million records a second (counted as lost if it does).
const DRAIN_PERIOD: Duration = Duration::from_millis(10);

/// Empty drains in a row (100 ms without a record) after which the reader waits in poll(2)
/// on the ring instead: an idle ioasid-top then sleeps until a record or the next report,
/// and the one wakeup that record costs starts the periodic drains again.
const IDLE_DRAINS: u32 = 10;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ioasid-top: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The `iommu_map` calls the kernel side counted instead of reporting.
fn read_elided_maps(session: &Session, agg: &mut Aggregator) -> anyhow::Result<()> {
    let (calls, bytes) = session
        .elided_maps()
        .context("reading the count of iommu_map calls without a record")?;
    agg.set_elided_maps(calls, bytes);
    Ok(())
}

/// The findings of `ioasid-top audit` now (None when not auditing).
fn audit_now(
    args: &Args,
    agg: &Aggregator,
    start_state: &startstate::StartState,
) -> anyhow::Result<Option<Vec<audit::Finding>>> {
    if !args.audit() {
        return Ok(None);
    }
    let snap = audit::read_snapshot(
        std::path::Path::new("/sys"),
        std::path::Path::new("/proc"),
        std::path::Path::new("/sys/kernel/debug"),
        args.pid,
        &agg.attached_devices(),
        startstate::page_size(),
    )
    .context("reading the audit's sysfs/procfs snapshot")?;
    let snap = audit::Snapshot {
        charged_at_start: start_state
            .procs
            .iter()
            .map(|(pid, p)| (*pid, (p.vm_pin_pages, p.vm_lck_pages)))
            .collect(),
        ..snap
    };
    Ok(Some(audit::evaluate(agg, &snap)))
}

/// Runs; the exit status: 0, or for `audit --once` that of the worst finding.
fn run(args: &Args) -> anyhow::Result<u8> {
    if let Some(why) = args.conflict() {
        bail!("{why}");
    }
    match privs::check() {
        Ok(Some(missing)) => bail!("{missing}"),
        Ok(None) => {}
        // Cannot tell: let bpf(2) decide and report.
        Err(e) => eprintln!("ioasid-top: warning: cannot check capabilities: {e:#}"),
    }
    install_signal_handlers()?;

    // `--comm` filters in userspace, and the kernel's count of the wrappers it leaves out
    // could not be filtered: report every call then.
    let mut session = Session::load(
        args.pid,
        args.kprobes_only,
        !args.no_pins,
        args.comm.is_none(),
    )?;
    let mut ring = session.ring_buffer()?;
    if let Err(why) = &session.group_id_offset {
        eprintln!(
            "ioasid-top: warning: IOMMU group numbers cannot be read ({why}): domains are not \
             tied to devices"
        );
    }

    // Read after the probes are attached, so a pin made while /proc is read
    // is in the start-up state, in the events, or (racing both) in both, but
    // never in neither.
    let filter = Filter {
        pid: args.pid,
        comm: args.comm.clone(),
    };
    let mut start_state = startstate::scan(
        std::path::Path::new("/proc"),
        args.pid,
        startstate::page_size(),
    )
    .context("reading the start-up state from /proc")?;
    start_state
        .procs
        .retain(|pid, p| filter.matches(*pid, &p.comm));

    // The probe lines after the start-up state is read: a script that starts its workload on
    // them cannot land in the start-up state.
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        for p in &session.probes {
            jsonl::write_probe(&mut out, p).context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
    } else {
        if args.no_pins {
            eprintln!("ioasid-top: the pinning functions are not traced (--no-pins)");
        }
        for p in &session.probes {
            let why = p.error.as_deref().unwrap_or("");
            if why == loader::NOT_ASKED {
                continue;
            }
            match p.attach {
                Attach::Fexit => eprintln!("ioasid-top: {}: traced with fexit", p.function),
                Attach::Kprobe => eprintln!(
                    "ioasid-top: {}: traced with kprobe/kretprobe ({why})",
                    p.function
                ),
                Attach::None => eprintln!(
                    "ioasid-top: warning: {}: not traced, skipped ({why})",
                    p.function
                ),
            }
        }
    }

    if args.json {
        jsonl::write_startup(&mut out, &start_state).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }

    if !session.tracing_iommu() {
        let eperm = session.probes.iter().any(|p| {
            p.error
                .as_deref()
                .is_some_and(|e| e.contains("Operation not permitted"))
        });
        bail!(
            "could not attach to any of iommu_map, iommu_map_nosync, iommu_unmap, iommu_unmap_fast (reasons above){}",
            if eperm {
                "; the kernel refused with EPERM: is it locked down, or are CAP_BPF/CAP_PERFMON dropped?"
            } else {
                ""
            }
        );
    }

    let live_table = !args.json && !args.once;
    let mut screen = if live_table && is_tty(libc::STDOUT_FILENO) {
        Some(AltScreen::enter(&mut out)?)
    } else {
        None
    };

    let interval = args.interval();
    let start = Instant::now();
    let mut next_tick = start + interval;
    let ranges = args
        .domain_view()
        .map(|only| ranges::RangeTracker::new(only, ranges::DEFAULT_CAP));
    let mut agg = Aggregator::with(filter, ranges);
    if args.audit() {
        agg.track_phys();
    }
    let mut backlog = false;
    let mut empty_drains = 0;
    let mut final_drains = 0;
    loop {
        let now = Instant::now();
        if !STOP.load(Ordering::Relaxed) && now < next_tick && !backlog {
            if empty_drains >= IDLE_DRAINS {
                wait(Some(ring.as_raw_fd()), next_tick - now)?;
            } else {
                wait(None, (next_tick - now).min(DRAIN_PERIOD))?;
            }
        }
        // A report is due after this drain: read the count of wrappers left without a record
        // first. Their inner records were submitted before they were counted, so this drain
        // takes them (unless it stops at its batch limit) and `kind` never shows more
        // `iommu_map` than `iommu_map_nosync` calls.
        if STOP.load(Ordering::Relaxed) || Instant::now() >= next_tick {
            read_elided_maps(&session, &mut agg)?;
        }
        let drained = drain(&mut ring, &mut agg, args, &mut out)?;
        backlog = drained == DRAIN_BATCH;
        empty_drains = if drained == 0 {
            empty_drains.saturating_add(1)
        } else {
            0
        };
        // New groups come only with records: no sysfs reads on empty drains (100 a second).
        if drained > 0 {
            agg.fill_group_devices(|id| {
                let id = u32::try_from(id).ok()?;
                procfiles::group_devices(std::path::Path::new("/sys"), id).ok()
            });
        }
        if args.json {
            out.flush().context("writing to stdout")?;
        }
        let stop = STOP.load(Ordering::Relaxed);
        let now = Instant::now();
        if now >= next_tick && !args.once {
            session
                .read_pins(agg.pins_mut(), std::path::Path::new("/proc"))
                .context("reading the pinning counters")?;
            let summary = Summary {
                is_final: false,
                elapsed: now - start,
                lost: session.lost()?,
                pid_filter: args.pid,
                comm_filter: args.comm.as_deref(),
            };
            let findings = audit_now(args, &agg, &start_state)?;
            if args.json {
                jsonl::write_audit_report(
                    &mut out,
                    &agg,
                    &start_state,
                    &summary,
                    findings.as_deref().unwrap_or_default(),
                )
                .context("writing to stdout")?;
            } else {
                redraw(
                    &mut out,
                    args,
                    &agg,
                    &start_state,
                    &summary,
                    &session,
                    findings.as_deref(),
                    screen.is_some(),
                )?;
            }
            out.flush().context("writing to stdout")?;
            next_tick += interval;
            if next_tick <= now {
                next_tick = now + interval;
            }
        }
        // Finishing: read what is left first, but not forever if the producers outrun us.
        if stop || (args.once && now >= next_tick) {
            if !backlog || final_drains >= FINAL_DRAINS_MAX {
                break;
            }
            final_drains += 1;
        }
    }

    // Leave the alternate screen before the final report so it stays visible.
    if let Some(s) = screen.take() {
        s.leave(&mut out)?;
    }
    session
        .read_pins(agg.pins_mut(), std::path::Path::new("/proc"))
        .context("reading the pinning counters")?;
    let summary = Summary {
        is_final: true,
        elapsed: start.elapsed(),
        lost: session.lost()?,
        pid_filter: args.pid,
        comm_filter: args.comm.as_deref(),
    };
    let findings = audit_now(args, &agg, &start_state)?;
    if args.json {
        jsonl::write_audit_report(
            &mut out,
            &agg,
            &start_state,
            &summary,
            findings.as_deref().unwrap_or_default(),
        )
        .context("writing to stdout")?;
    } else {
        writeln!(
            out,
            "{}\n{}",
            table::render_status(&agg, &summary, &session.probes),
            body(args, &agg, &start_state, findings.as_deref())
        )
        .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(match &findings {
        Some(f) if args.once => audit::exit_status(f),
        _ => 0,
    })
}

/// Under the status lines: the findings when auditing, the ranges in `domain`, else the
/// tables.
fn body(
    args: &Args,
    agg: &Aggregator,
    start: &startstate::StartState,
    findings: Option<&[audit::Finding]>,
) -> String {
    match (findings, agg.ranges()) {
        (Some(f), _) => table::render_findings(f, term_width()),
        (None, Some(r)) => table::render_domain_view(r, term_width()),
        (None, None) => format!(
            "{}\n{}",
            table::render_tables(agg, args.sort, term_width()),
            table::render_pin_table(agg, start, args.sort, term_width())
        ),
    }
}

/// Decodes and accounts everything available, up to [`DRAIN_BATCH`] records; returns how
/// many it took (`DRAIN_BATCH`: there may be more).
fn drain<W: Write>(
    ring: &mut RingBuf<MapData>,
    agg: &mut Aggregator,
    args: &Args,
    out: &mut W,
) -> anyhow::Result<usize> {
    for taken in 0..DRAIN_BATCH {
        let Some(item) = ring.next() else {
            return Ok(taken);
        };
        let decoded = event::decode(&item);
        drop(item);
        match decoded {
            Ok(ev) => {
                // --pid: the kernel side filters too; this guards a stale object. --comm:
                // here only.
                if !agg.accepts(&ev) {
                    agg.track_unshown(&ev);
                    continue;
                }
                let seen = agg.observe(&ev);
                if args.json {
                    jsonl::write_event(out, &ev, seen.wraps_nosync).context("writing to stdout")?;
                }
            }
            Err(_) => agg.undecodable(),
        }
    }
    Ok(DRAIN_BATCH)
}

#[allow(clippy::too_many_arguments, reason = "one call site, all of it needed")]
fn redraw<W: Write>(
    out: &mut W,
    args: &Args,
    agg: &Aggregator,
    start: &startstate::StartState,
    summary: &Summary<'_>,
    session: &Session,
    findings: Option<&[audit::Finding]>,
    on_alt_screen: bool,
) -> anyhow::Result<()> {
    if on_alt_screen {
        // Home + clear screen.
        write!(out, "\x1b[H\x1b[2J").context("writing to stdout")?;
    }
    writeln!(
        out,
        "{}\n{}\n(Ctrl-C to quit)",
        table::render_status(agg, summary, &session.probes),
        body(args, agg, start, findings)
    )
    .context("writing to stdout")?;
    Ok(())
}

/// Sleeps until `timeout` passes or a signal arrives, or, with `ring`, until that ring
/// buffer fd is readable.
fn wait(ring: Option<RawFd>, timeout: Duration) -> anyhow::Result<()> {
    let mut pfd = libc::pollfd {
        fd: ring.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd; poll(2) ignores an entry whose fd is negative, so without
    // `ring` it only sleeps.
    let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("poll(2) on the eBPF ring buffer");
        }
    }
    Ok(())
}

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: zeroed sigaction is a valid starting point; the handler
        // only stores to an atomic (async-signal-safe). No SA_RESTART, so
        // poll(2) returns EINTR and the loop notices at once.
        let ret = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("installing handler for signal {sig}"));
        }
    }
    Ok(())
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty on any fd number is safe.
    unsafe { libc::isatty(fd) == 1 }
}

fn term_width() -> Option<u16> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (ret == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

/// Alternate screen with hidden cursor; restored on leave or drop (also on
/// error paths and panics).
struct AltScreen {
    active: bool,
}

impl AltScreen {
    fn enter<W: Write>(out: &mut W) -> anyhow::Result<Self> {
        out.write_all(b"\x1b[?1049h\x1b[?25l")
            .and_then(|()| out.flush())
            .context("setting up the terminal")?;
        Ok(AltScreen { active: true })
    }

    fn leave<W: Write>(mut self, out: &mut W) -> anyhow::Result<()> {
        self.active = false;
        out.write_all(RESTORE)
            .and_then(|()| out.flush())
            .context("restoring the terminal")
    }
}

const RESTORE: &[u8] = b"\x1b[?25h\x1b[?1049l";

impl Drop for AltScreen {
    fn drop(&mut self) {
        if self.active {
            // Best effort: stdout may be gone.
            let mut o = io::stdout();
            let _ = o.write_all(RESTORE);
            let _ = o.flush();
        }
    }
}
