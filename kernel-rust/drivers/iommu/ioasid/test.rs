// SPDX-License-Identifier: GPL-2.0

//! Test hooks, with `CONFIG_IOASID_TEST`: what the devices of a test machine cannot do,
//! simulated.
//!
//! `/sys/kernel/debug/ioasid/no_snoop_override` decides whether devices can issue no-snoop DMA,
//! the device's part of the answer `/dev/ioasid` gives KVM (see `device.rs`): `hw` (the
//! default) reads each device's config space, `0` says no device can, `1` says every device
//! can. No device QEMU emulates can enable no-snoop (Enable No Snoop is read-only 0 in their
//! Device Control registers, and `edu` is conventional PCI), so without the hook a test machine
//! could only ever show the answer "coherent". The rest of the path (the domain's coherency,
//! vfio, KVM) is the real one. A write is seen at the next question KVM asks: on
//! `KVM_DEV_VFIO_FILE_ADD` or `_DEL`, and after an attach or a detach.

#[cfg(CONFIG_IOASID_TEST)]
mod hooks {
    use core::fmt;
    use kernel::{
        debugfs::{
            Dir,
            File, //
        },
        prelude::*,
        sync::atomic::{
            Atomic,
            Relaxed, //
        },
        uaccess::UserSliceReader,
    };

    /// -1: read each device; 0: no device can issue no-snoop; 1: every device can.
    static NO_SNOOP_OVERRIDE: Atomic<i32> = Atomic::new(-1);

    /// The override of whether devices can issue no-snoop DMA, if one is set.
    pub(crate) fn no_snoop_override() -> Option<bool> {
        match NO_SNOOP_OVERRIDE.load(Relaxed) {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn show(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match no_snoop_override() {
            None => writeln!(f, "hw"),
            Some(false) => writeln!(f, "0"),
            Some(true) => writeln!(f, "1"),
        }
    }

    fn store(_: &(), reader: &mut UserSliceReader) -> Result {
        let mut buf = [0u8; 8];
        let len = reader.len();
        if len > buf.len() {
            return Err(EINVAL);
        }
        reader.read_slice(&mut buf[..len])?;
        let value = match buf[..len].trim_ascii() {
            b"hw" => -1,
            b"0" => 0,
            b"1" => 1,
            _ => return Err(EINVAL),
        };
        NO_SNOOP_OVERRIDE.store(value, Relaxed);
        Ok(())
    }

    /// The debugfs files of the hooks, removed when this is dropped.
    #[pin_data]
    pub(crate) struct TestHooks {
        #[pin]
        no_snoop: File<()>,
        dir: Dir,
    }

    impl TestHooks {
        /// Creates `/sys/kernel/debug/ioasid/` and the hooks in it.
        pub(crate) fn new() -> impl PinInit<Self, Error> {
            let dir = Dir::new(c"ioasid");
            try_pin_init!(Self {
                no_snoop <- dir.read_write_callback_file(c"no_snoop_override", (), &show, &store),
                dir,
            })
        }
    }
}

#[cfg(not(CONFIG_IOASID_TEST))]
mod hooks {
    use kernel::prelude::*;

    /// Without `CONFIG_IOASID_TEST` nothing overrides what the devices say.
    pub(crate) fn no_snoop_override() -> Option<bool> {
        None
    }

    /// No hooks.
    #[pin_data]
    pub(crate) struct TestHooks {}

    impl TestHooks {
        pub(crate) fn new() -> impl PinInit<Self, Error> {
            try_pin_init!(TestHooks {})
        }
    }
}

pub(crate) use hooks::{
    no_snoop_override,
    TestHooks, //
};
