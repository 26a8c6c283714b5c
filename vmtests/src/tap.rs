//! Minimal TAP-like reporting: a `1..N` plan, then one `ok - <name>` or
//! `not ok - <name>: <why>` line per check.

use crate::errno::{describe_result, errno_name};
use std::io::{self, Write};

/// Outcome of one check: `Err` carries the mismatch text
/// (`"expected ENOENT got ok"`).
pub type CheckResult = Result<(), String>;

/// `Ok` iff `r` failed with exactly `errno`.
pub fn expect_errno<T: std::fmt::Debug>(r: &io::Result<T>, errno: i32) -> CheckResult {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        _ => Err(format!(
            "expected {} got {}",
            errno_name(errno),
            describe_result(r)
        )),
    }
}

/// `Ok(value)` iff `r` succeeded.
pub fn expect_ok<T: std::fmt::Debug>(r: io::Result<T>) -> Result<T, String> {
    match r {
        Ok(v) => Ok(v),
        Err(_) => Err(format!("expected ok got {}", describe_result(&r))),
    }
}

/// Format one result line.
pub fn line(name: &str, r: &CheckResult) -> String {
    match r {
        Ok(()) => format!("ok - {name}"),
        Err(why) => format!("not ok - {name}: {why}"),
    }
}

/// Streams results to `out` and counts failures.
pub struct Tap<W: Write> {
    out: W,
    planned: usize,
    run: usize,
    failed: usize,
}

impl<W: Write> Tap<W> {
    /// Prints the `1..N` plan.
    pub fn new(mut out: W, planned: usize) -> io::Result<Self> {
        writeln!(out, "1..{planned}")?;
        out.flush()?;
        Ok(Self {
            out,
            planned,
            run: 0,
            failed: 0,
        })
    }

    pub fn report(&mut self, name: &str, r: &CheckResult) -> io::Result<()> {
        self.run += 1;
        if r.is_err() {
            self.failed += 1;
        }
        writeln!(self.out, "{}", line(name, r))?;
        self.out.flush()
    }

    /// TAP "Bail out!" line.
    pub fn bail_out(&mut self, why: &str) -> io::Result<()> {
        writeln!(self.out, "Bail out! {why}")?;
        self.out.flush()
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    /// All planned checks ran and none failed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.run == self.planned
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(line("a", &Ok(())), "ok - a");
        assert_eq!(
            line("b", &Err("expected X got Y".into())),
            "not ok - b: expected X got Y"
        );
    }

    #[test]
    fn expectations() {
        let r: io::Result<u32> = Err(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(expect_errno(&r, libc::ENOENT), Ok(()));
        assert_eq!(
            expect_errno(&r, libc::EINVAL).unwrap_err(),
            "expected EINVAL got ENOENT (2)"
        );
        let ok: io::Result<u32> = Ok(5);
        assert_eq!(
            expect_errno(&ok, libc::E2BIG).unwrap_err(),
            "expected E2BIG got ok (5)"
        );
        assert_eq!(expect_ok(ok), Ok(5));
        assert_eq!(expect_ok(r).unwrap_err(), "expected ok got ENOENT (2)");
    }

    #[test]
    fn stream() {
        let mut t = Tap::new(Vec::new(), 2).unwrap();
        t.report("one", &Ok(())).unwrap();
        assert!(!t.all_passed());
        t.report("two", &Err("expected ok got EINVAL (22)".into()))
            .unwrap();
        assert_eq!(t.failed(), 1);
        assert!(!t.all_passed());
        let s = String::from_utf8(t.into_inner()).unwrap();
        assert_eq!(
            s,
            "1..2\nok - one\nnot ok - two: expected ok got EINVAL (22)\n"
        );
    }
}
