//! The pinning lines of a `/dev/ioasid` file's `/proc/<pid>/fdinfo/<fd>`, as documented at the
//! top of `drivers/iommu/ioasid/ioasid.rs`:
//!
//! ```text
//! ioasid-account-mode:\t<mode>
//! ioasid-pinned-pages:\t<pages>
//! ioasid-charged-pages:\t<pages>
//! ioasid-object:\t<id> <kind>
//! ioasid-area:\t<id> <iova> <length> <prot>
//! ```
//!
//! The format asks parsers to skip keys and object kinds they do not know; a known key with a
//! malformed value is an error (a kernel and a parser out of step should be noticed, not
//! silently read as 0).

use std::fmt;

/// One `ioasid-area` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// IOAS object id.
    pub ioas: u32,
    pub iova: u64,
    /// Length in bytes.
    pub length: u64,
    /// `rw`, `r-`, `-w` or `--`.
    pub prot: String,
}

/// What the fdinfo of one `/dev/ioasid` file says about its pinned memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoasidFdinfo {
    /// `user` or `mm` (empty when the line is missing: not a /dev/ioasid fdinfo).
    pub account_mode: String,
    /// Distinct pages the file has pinned.
    pub pinned_pages: u64,
    /// Of those, pages charged to `RLIMIT_MEMLOCK`.
    pub charged_pages: u64,
    /// `(id, kind)` of every `ioasid-object` line.
    pub objects: Vec<(u32, String)>,
    pub areas: Vec<Area>,
}

impl IoasidFdinfo {
    /// Whether the text had the lines of a `/dev/ioasid` file.
    pub fn is_ioasid(&self) -> bool {
        !self.account_mode.is_empty()
    }
}

/// A malformed known line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: String,
    pub why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad fdinfo line {:?}: {}", self.line, self.why)
    }
}

impl std::error::Error for ParseError {}

fn dec<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| format!("{s:?} is not a decimal number: {e}"))
}

fn hex(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s:?} has no 0x prefix"))?;
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?} is not hexadecimal: {e}"))
}

/// Parses fdinfo text. Lines that are not `key:\tvalue` or have an unknown key are skipped.
pub fn parse(text: &str) -> Result<IoasidFdinfo, ParseError> {
    let mut info = IoasidFdinfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(":\t") else {
            continue;
        };
        let value = value.trim();
        let err = |why: String| ParseError {
            line: line.to_owned(),
            why,
        };
        match key {
            "ioasid-account-mode" => info.account_mode = value.to_owned(),
            "ioasid-pinned-pages" => info.pinned_pages = dec(value).map_err(err)?,
            "ioasid-charged-pages" => info.charged_pages = dec(value).map_err(err)?,
            "ioasid-object" => {
                let Some((id, kind)) = value.split_once(' ') else {
                    return Err(err("expected `<id> <kind>`".into()));
                };
                info.objects.push((dec(id).map_err(err)?, kind.to_owned()));
            }
            "ioasid-area" => {
                let f: Vec<&str> = value.split_whitespace().collect();
                let [ioas, iova, length, prot] = f.as_slice() else {
                    return Err(err("expected `<id> <iova> <length> <prot>`".into()));
                };
                info.areas.push(Area {
                    ioas: dec(ioas).map_err(err)?,
                    iova: hex(iova).map_err(err)?,
                    length: hex(length).map_err(err)?,
                    prot: (*prot).to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "pos:\t0\nflags:\t02\nmnt_id:\t5\nino:\t12\n\
ioasid-account-mode:\tuser\nioasid-pinned-pages:\t48\nioasid-charged-pages:\t0\n\
ioasid-object:\t1 ioas\nioasid-area:\t1 0x100000 0x10000 rw\nioasid-area:\t1 0x200000 0x20000 r-\n\
ioasid-object:\t2 hwpt_paging\nioasid-future-key:\twhatever 1 2\n";

    #[test]
    fn parses_the_documented_lines_and_skips_the_rest() {
        let i = parse(TEXT).unwrap();
        assert!(i.is_ioasid());
        assert_eq!(
            (i.account_mode.as_str(), i.pinned_pages, i.charged_pages),
            ("user", 48, 0)
        );
        assert_eq!(
            i.objects,
            vec![(1, "ioas".into()), (2, "hwpt_paging".into())]
        );
        assert_eq!(
            i.areas,
            vec![
                Area {
                    ioas: 1,
                    iova: 0x100000,
                    length: 0x10000,
                    prot: "rw".into()
                },
                Area {
                    ioas: 1,
                    iova: 0x200000,
                    length: 0x20000,
                    prot: "r-".into()
                },
            ]
        );
    }

    #[test]
    fn other_files_are_not_ioasid() {
        let i = parse("pos:\t0\nflags:\t02\neventfd-count:\t0\n").unwrap();
        assert!(!i.is_ioasid());
        assert_eq!(i, IoasidFdinfo::default());
        assert!(!parse("").unwrap().is_ioasid());
    }

    #[test]
    fn malformed_known_lines_are_errors() {
        for bad in [
            "ioasid-pinned-pages:\tmany\n",
            "ioasid-charged-pages:\t-1\n",
            "ioasid-object:\t1\n",
            "ioasid-object:\tx ioas\n",
            "ioasid-area:\t1 0x1000 rw\n",
            "ioasid-area:\t1 4096 0x1000 rw\n",
            "ioasid-area:\t1 0x1000 0xzz rw\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("bad fdinfo line"), "{bad}: {e}");
        }
    }
}
