//! `<debugfs>/ioasid/no_snoop_override`, the no-snoop test hook of a kernel with
//! `CONFIG_IOASID_TEST` (a debugfs uAPI of the series): `1` or `0` replaces what /dev/ioasid
//! reads of every device's ability to issue no-snoop, `hw` (the default) does not. QEMU's
//! devices cannot enable no-snoop, so tests and the audit read it as the kernel does.

use std::{io, path::Path};

/// The hook's path under the debugfs mount point.
pub const NO_SNOOP_OVERRIDE: &str = "ioasid/no_snoop_override";

/// The hook's value (`hw`, `1`, `0`); None without the hook (not a test kernel, debugfs not
/// mounted or not readable).
pub fn read_no_snoop_override(debugfs: &Path) -> io::Result<Option<String>> {
    let path = debugfs.join(NO_SNOOP_OVERRIDE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            Ok(None)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("reading {}: {e}", path.display()),
        )),
    }
}

/// What the hook says of every device: Some(true) for `1`, Some(false) for `0`, None for `hw`
/// or without the hook.
pub fn forced_no_snoop(value: Option<&str>) -> Option<bool> {
    match value {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_read_and_understood() {
        let root = std::env::temp_dir().join(format!("uapi-hook-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(read_no_snoop_override(&root).unwrap(), None);
        std::fs::create_dir_all(root.join("ioasid")).unwrap();
        for (text, want) in [("1\n", Some(true)), ("0\n", Some(false)), ("hw\n", None)] {
            std::fs::write(root.join(NO_SNOOP_OVERRIDE), text).unwrap();
            let got = read_no_snoop_override(&root).unwrap();
            assert_eq!(got.as_deref(), Some(text.trim()));
            assert_eq!(forced_no_snoop(got.as_deref()), want, "{text}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
