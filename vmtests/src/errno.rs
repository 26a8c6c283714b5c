//! Human-readable errno names for test output.

use std::io;

/// Symbolic name of an errno value (`"ENOENT"`), or `"errno N"` if unknown.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOTTY => "ENOTTY",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// `"ENOENT (2)"` for OS errors, the error's text otherwise.
pub fn describe_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{} ({n})", errno_name(n)),
        None => format!("non-errno error: {e}"),
    }
}

/// `"ok"` / `"ok (value)"` for successes, [`describe_error`] for failures.
pub fn describe_result<T: std::fmt::Debug>(r: &io::Result<T>) -> String {
    match r {
        Ok(v) => {
            let v = format!("{v:?}");
            if v == "()" {
                "ok".to_string()
            } else {
                format!("ok ({v})")
            }
        }
        Err(e) => describe_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::E2BIG), "E2BIG");
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(9999), "errno 9999");
    }

    #[test]
    fn results() {
        let ok: io::Result<()> = Ok(());
        assert_eq!(describe_result(&ok), "ok");
        let ok: io::Result<u32> = Ok(3);
        assert_eq!(describe_result(&ok), "ok (3)");
        let e: io::Result<u32> = Err(io::Error::from_raw_os_error(libc::ENOTTY));
        assert_eq!(describe_result(&e), "ENOTTY (25)");
        let e: io::Result<u32> = Err(io::Error::other("boom"));
        assert_eq!(describe_result(&e), "non-errno error: boom");
    }
}
