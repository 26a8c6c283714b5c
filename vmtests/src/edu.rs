//! QEMU `edu` educational PCI device (hw/misc/edu.c, docs/specs/edu.rst):
//! register map and the DMA sequence, written against a small [`Mmio`]
//! trait so that the logic is unit-testable with a simulated device.

use anyhow::{Context, Result, bail, ensure};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const EDU_VENDOR_ID: u16 = 0x1234;
pub const EDU_DEVICE_ID: u16 = 0x11e8;

/// 0x00: identification, `0xRRrr00ed` (major, minor, 0x00, 0xed)
pub const REG_IDENT: u64 = 0x00;
/// 0x04: liveness check: reads back the bitwise inverse of what was written
pub const REG_LIVENESS: u64 = 0x04;
pub const REG_DMA_SRC: u64 = 0x80;
pub const REG_DMA_DST: u64 = 0x88;
pub const REG_DMA_COUNT: u64 = 0x90;
pub const REG_DMA_CMD: u64 = 0x98;

/// cmd bit 0: start transfer (cleared by the device when done)
pub const DMA_CMD_START: u32 = 1 << 0;
/// cmd bit 1: direction, 1 = device → RAM, 0 = RAM → device
pub const DMA_CMD_TO_RAM: u32 = 1 << 1;
/// cmd bit 2: raise an interrupt when done
pub const DMA_CMD_IRQ: u32 = 1 << 2;

/// Device-side DMA buffer: BAR-address space offset and size.
pub const DMA_BUF_ADDR: u64 = 0x40000;
pub const DMA_BUF_SIZE: u64 = 4096;
/// edu's default `dma_mask`: bus addresses are clamped to 28 bits.
pub const DMA_ADDR_LIMIT: u64 = 1 << 28;

/// 32-bit register access to BAR0 (edu accepts 4- or 8-byte accesses at
/// >= 0x80; a 4-byte write there zero-extends into the 64-bit register).
pub trait Mmio {
    fn read32(&self, offset: u64) -> Result<u32>;
    fn write32(&self, offset: u64, value: u32) -> Result<()>;
}

pub struct Edu<M: Mmio> {
    bar: M,
    /// how long to wait for a transfer (≈100 ms of virtual time each)
    pub timeout: Duration,
    /// polling interval
    pub poll: Duration,
}

impl<M: Mmio> Edu<M> {
    pub fn new(bar: M) -> Self {
        Self {
            bar,
            timeout: Duration::from_secs(5),
            poll: Duration::from_millis(1),
        }
    }

    pub fn bar(&self) -> &M {
        &self.bar
    }

    /// Identification register low byte must be 0xed.
    pub fn check_ident(&self) -> Result<u32> {
        let id = self
            .bar
            .read32(REG_IDENT)
            .context("reading edu ident register")?;
        ensure!(
            id & 0xff == 0xed,
            "edu ident register reads {id:#010x}, expected 0x......ed"
        );
        Ok(id)
    }

    /// Liveness register inverts what we write.
    pub fn check_liveness(&self, probe: u32) -> Result<()> {
        self.bar
            .write32(REG_LIVENESS, probe)
            .context("writing edu liveness register")?;
        let got = self
            .bar
            .read32(REG_LIVENESS)
            .context("reading edu liveness register")?;
        ensure!(
            got == !probe,
            "edu liveness: wrote {probe:#010x}, read {got:#010x}, expected {:#010x}",
            !probe
        );
        Ok(())
    }

    fn check_iova(iova: u64, len: u64) -> Result<u32> {
        match iova.checked_add(len) {
            Some(end) if end <= DMA_ADDR_LIMIT => {}
            _ => bail!("IOVA range {iova:#x}+{len:#x} beyond edu's 28-bit DMA mask"),
        }
        u32::try_from(iova).context("IOVA does not fit a 32-bit register write")
    }

    fn check_dev(off: u64, len: u64) -> Result<u32> {
        ensure!(
            len > 0 && len <= DMA_BUF_SIZE,
            "edu DMA length {len:#x} not in 1..={DMA_BUF_SIZE:#x}"
        );
        match off.checked_add(len) {
            Some(end) if end <= DMA_BUF_SIZE => {}
            _ => bail!(
                "edu buffer range {off:#x}+{len:#x} outside its {DMA_BUF_SIZE:#x}-byte buffer"
            ),
        }
        u32::try_from(DMA_BUF_ADDR + off).context("device address")
    }

    fn run(&self, src: u32, dst: u32, count: u32, cmd: u32) -> Result<()> {
        let busy = self
            .bar
            .read32(REG_DMA_CMD)
            .context("reading edu DMA cmd")?;
        ensure!(
            busy & DMA_CMD_START == 0,
            "edu DMA engine busy (cmd {busy:#x})"
        );
        self.bar
            .write32(REG_DMA_SRC, src)
            .context("writing edu DMA src")?;
        self.bar
            .write32(REG_DMA_DST, dst)
            .context("writing edu DMA dst")?;
        self.bar
            .write32(REG_DMA_COUNT, count)
            .context("writing edu DMA count")?;
        self.bar
            .write32(REG_DMA_CMD, cmd | DMA_CMD_START)
            .context("writing edu DMA cmd")?;
        let start = Instant::now();
        loop {
            let c = self
                .bar
                .read32(REG_DMA_CMD)
                .context("polling edu DMA cmd")?;
            if c & DMA_CMD_START == 0 {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                bail!(
                    "edu DMA src={src:#x} dst={dst:#x} count={count:#x} cmd={cmd:#x} did not complete within {:?}",
                    self.timeout
                );
            }
            sleep(self.poll);
        }
    }

    /// DMA `len` bytes from bus address `iova` into the device buffer at `dev_off`.
    pub fn ram_to_device(&self, iova: u64, dev_off: u64, len: u64) -> Result<()> {
        let src = Self::check_iova(iova, len)?;
        let dst = Self::check_dev(dev_off, len)?;
        self.run(src, dst, len as u32, 0)
    }

    /// DMA `len` bytes from the device buffer at `dev_off` to bus address `iova`.
    pub fn device_to_ram(&self, dev_off: u64, iova: u64, len: u64) -> Result<()> {
        let src = Self::check_dev(dev_off, len)?;
        let dst = Self::check_iova(iova, len)?;
        self.run(src, dst, len as u32, DMA_CMD_TO_RAM)
    }
}

#[cfg(test)]
pub(crate) mod sim {
    //! A software model of edu's MMIO + DMA behaviour for tests.
    use super::*;
    use std::cell::RefCell;

    pub struct SimEdu {
        pub state: RefCell<State>,
    }

    pub struct State {
        pub addr4: u32,
        pub src: u64,
        pub dst: u64,
        pub cnt: u64,
        pub cmd: u64,
        pub buf: Vec<u8>,
        /// bus memory: (iova base, bytes)
        pub ram: Vec<(u64, Vec<u8>)>,
        /// how many cmd polls before a started transfer completes
        pub latency: u32,
        pub pending: u32,
        pub never_finish: bool,
        pub log: Vec<String>,
    }

    impl SimEdu {
        pub fn new(ram: Vec<(u64, Vec<u8>)>) -> Self {
            Self {
                state: RefCell::new(State {
                    addr4: 0,
                    src: 0,
                    dst: 0,
                    cnt: 0,
                    cmd: 0,
                    buf: vec![0; DMA_BUF_SIZE as usize],
                    ram,
                    latency: 3,
                    pending: 0,
                    never_finish: false,
                    log: Vec::new(),
                }),
            }
        }
    }

    fn ram_slice(ram: &mut [(u64, Vec<u8>)], iova: u64, len: usize) -> Result<&mut [u8]> {
        for (base, bytes) in ram.iter_mut() {
            if iova >= *base && iova + len as u64 <= *base + bytes.len() as u64 {
                let o = (iova - *base) as usize;
                return Ok(&mut bytes[o..o + len]);
            }
        }
        bail!("IOMMU fault: {iova:#x}+{len:#x} not mapped")
    }

    impl State {
        fn complete(&mut self) -> Result<()> {
            let n = self.cnt as usize;
            if self.cmd & DMA_CMD_TO_RAM as u64 == 0 {
                let o = (self.dst - DMA_BUF_ADDR) as usize;
                let (src, mut ram) = (self.src, std::mem::take(&mut self.ram));
                let data = ram_slice(&mut ram, src, n)?.to_vec();
                self.ram = ram;
                self.buf[o..o + n].copy_from_slice(&data);
            } else {
                let o = (self.src - DMA_BUF_ADDR) as usize;
                let data = self.buf[o..o + n].to_vec();
                let dst = self.dst;
                ram_slice(&mut self.ram, dst, n)?.copy_from_slice(&data);
            }
            self.cmd &= !(DMA_CMD_START as u64);
            Ok(())
        }
    }

    impl Mmio for SimEdu {
        fn read32(&self, offset: u64) -> Result<u32> {
            let mut s = self.state.borrow_mut();
            Ok(match offset {
                REG_IDENT => 0x010000ed,
                REG_LIVENESS => s.addr4,
                REG_DMA_SRC => s.src as u32,
                REG_DMA_DST => s.dst as u32,
                REG_DMA_COUNT => s.cnt as u32,
                REG_DMA_CMD => {
                    if s.cmd & DMA_CMD_START as u64 != 0 && !s.never_finish {
                        if s.pending == 0 {
                            s.complete()?;
                        } else {
                            s.pending -= 1;
                        }
                    }
                    s.cmd as u32
                }
                _ => u32::MAX,
            })
        }

        fn write32(&self, offset: u64, value: u32) -> Result<()> {
            let mut s = self.state.borrow_mut();
            s.log.push(format!("{offset:#x}={value:#x}"));
            let busy = s.cmd & DMA_CMD_START as u64 != 0;
            match offset {
                REG_LIVENESS => s.addr4 = !value,
                REG_DMA_SRC if !busy => s.src = value as u64,
                REG_DMA_DST if !busy => s.dst = value as u64,
                REG_DMA_COUNT if !busy => s.cnt = value as u64,
                REG_DMA_CMD if !busy && value & DMA_CMD_START != 0 => {
                    s.cmd = value as u64;
                    s.pending = s.latency;
                }
                _ => {}
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::SimEdu;
    use super::*;

    #[test]
    fn ident_and_liveness() {
        let e = Edu::new(SimEdu::new(vec![]));
        assert_eq!(e.check_ident().unwrap(), 0x010000ed);
        e.check_liveness(0x1234_5678).unwrap();
    }

    #[test]
    fn round_trip_through_device() {
        let pat: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let ram = vec![(0x100000, pat.clone()), (0x101000, vec![0u8; 4096])];
        let e = Edu::new(SimEdu::new(ram));
        e.ram_to_device(0x100000, 0, 4096).unwrap();
        e.device_to_ram(0, 0x101000, 4096).unwrap();
        let s = e.bar().state.borrow();
        assert_eq!(s.ram[1].1, pat);
        // RAM->device uses direction 0, device->RAM direction bit set.
        assert!(
            s.log
                .contains(&format!("{REG_DMA_CMD:#x}={:#x}", DMA_CMD_START))
        );
        assert!(s.log.contains(&format!(
            "{REG_DMA_CMD:#x}={:#x}",
            DMA_CMD_START | DMA_CMD_TO_RAM
        )));
        assert!(
            s.log
                .contains(&format!("{REG_DMA_DST:#x}={DMA_BUF_ADDR:#x}"))
        );
    }

    #[test]
    fn unmapped_iova_faults() {
        let e = Edu::new(SimEdu::new(vec![(0x100000, vec![0u8; 4096])]));
        assert!(e.ram_to_device(0x200000, 0, 4096).is_err());
    }

    #[test]
    fn timeout() {
        let sim = SimEdu::new(vec![(0x100000, vec![0u8; 4096])]);
        sim.state.borrow_mut().never_finish = true;
        let mut e = Edu::new(sim);
        e.timeout = Duration::from_millis(20);
        let err = e.ram_to_device(0x100000, 0, 16).unwrap_err().to_string();
        assert!(err.contains("did not complete"), "{err}");
        // engine now busy: next transfer refused rather than clobbered
        let err = e.device_to_ram(0, 0x100000, 16).unwrap_err().to_string();
        assert!(err.contains("busy"), "{err}");
    }

    #[test]
    fn argument_checks() {
        let e = Edu::new(SimEdu::new(vec![]));
        assert!(e.ram_to_device(0x100000, 0, 0).is_err());
        assert!(e.ram_to_device(0x100000, 0, 4097).is_err());
        assert!(e.ram_to_device(0x100000, 4000, 200).is_err());
        assert!(e.ram_to_device(DMA_ADDR_LIMIT - 16, 0, 32).is_err());
        assert!(e.device_to_ram(0, u64::MAX - 4, 16).is_err());
        // nothing reached the device
        assert!(e.bar().state.borrow().log.is_empty());
    }
}
