//! Poison: uncorrectable media errors by physical address, the granularity ladder of pm_hw.md
//! section 3, machine checks on consumption (action-required), address-range scrub reports
//! (action-optional), the kernel's badblocks list, and clearing at the clear unit.

use super::params::MediaParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ops::Range;

/// A rung of the poison granularity ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoisonUnit {
    /// What a load consumes and the machine check names: a 64 B cache line.
    Consume,
    /// The ECC unit, which ARS reports and the clear-error command clears (Optane 256 B).
    Clear,
    /// The kernel's badblocks sector (512 B).
    Badblocks,
    /// What memory_failure() marks and SIGBUS names: a 4 KiB page.
    Signal,
}

/// The sizes of the ladder's rungs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonUnits {
    pub consume: u64,
    pub clear: u64,
    pub badblocks: u64,
    pub signal: u64,
}

impl PoisonUnits {
    pub fn from_params(p: &MediaParams) -> Self {
        PoisonUnits {
            consume: p.poison_consume,
            clear: p.poison_clear,
            badblocks: p.poison_badblocks,
            signal: p.poison_signal,
        }
    }

    pub fn size(&self, unit: PoisonUnit) -> u64 {
        match unit {
            PoisonUnit::Consume => self.consume,
            PoisonUnit::Clear => self.clear,
            PoisonUnit::Badblocks => self.badblocks,
            PoisonUnit::Signal => self.signal,
        }
    }

    /// The aligned `unit`-sized range holding `addr`.
    pub fn range(&self, unit: PoisonUnit, addr: u64) -> Range<u64> {
        let size = self.size(unit);
        let start = addr - addr % size;
        start..start + size
    }
}

/// How a machine check is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum McKind {
    /// A load consumed poison: the consumer must act (SIGBUS `BUS_MCEERR_AR`).
    ActionRequired,
    /// Poison found before anyone consumed it, by a scrub (SIGBUS `BUS_MCEERR_AO`).
    ActionOptional,
}

/// A machine check raised by a load that consumed poison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineCheck {
    pub kind: McKind,
    pub cpu: usize,
    /// Physical address of the consumed poisoned unit (aligned to `units.consume`).
    pub addr: u64,
    /// Bytes of the load before the poisoned unit that were copied (`copy_mc` semantics: the
    /// kernel's read() returns them, or EIO if zero).
    pub bytes_copied: usize,
    pub units: PoisonUnits,
}

impl MachineCheck {
    /// The range of `unit` around the poisoned address: `Signal` is what memory_failure()
    /// marks HWPoison and `si_addr`/`si_addr_lsb` describe.
    pub fn range(&self, unit: PoisonUnit) -> Range<u64> {
        self.units.range(unit, self.addr)
    }
}

/// A poisoned physical range reported by a scrub (ARS), aligned to the clear unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BadRange {
    pub addr: u64,
    pub len: u64,
}

impl BadRange {
    /// The badblocks sectors (first, count) covering the range, as `regionN/badblocks` shows.
    pub fn sectors(&self, units: &PoisonUnits) -> (u64, u64) {
        let first = self.addr / units.badblocks;
        let last = (self.addr + self.len).div_ceil(units.badblocks);
        (first, last - first)
    }
}

/// The machine's poison state: poisoned consume units, what scrubs have reported, and the
/// badblocks sectors the kernel knows of.
#[derive(Clone, Debug)]
pub(crate) struct Poison {
    pub units: PoisonUnits,
    /// Poisoned consume units (unit index).
    bad: BTreeSet<u64>,
    /// Consume units already reported by a scrub or a machine check.
    known: BTreeSet<u64>,
}

impl Poison {
    pub fn new(units: PoisonUnits) -> Self {
        Poison {
            units,
            bad: BTreeSet::new(),
            known: BTreeSet::new(),
        }
    }

    fn consume_units(&self, addr: u64, len: u64) -> Range<u64> {
        let c = self.units.consume;
        addr / c..(addr + len).div_ceil(c)
    }

    /// Poisons every consume unit overlapping `[addr, addr + len)`.
    pub fn inject(&mut self, addr: u64, len: u64) {
        for u in self.consume_units(addr, len.max(1)) {
            self.bad.insert(u);
        }
    }

    /// The first poisoned consume unit overlapping the range, as an address.
    pub fn first_bad(&self, addr: u64, len: u64) -> Option<u64> {
        if self.bad.is_empty() || len == 0 {
            return None;
        }
        self.bad
            .range(self.consume_units(addr, len))
            .next()
            .map(|u| u * self.units.consume)
    }

    /// A machine check consumed the unit at `addr`: the platform logs it (nfit_handle_mce adds
    /// it to the badblocks list).
    pub fn consumed(&mut self, addr: u64) {
        self.known.insert(addr / self.units.consume);
    }

    /// Clears poison on every clear unit entirely inside `[addr, addr + len)`; returns the
    /// cleared ranges. A partial clear unit stays poisoned (the clear command works on whole
    /// aligned `clear_err_unit`s).
    pub fn clear(&mut self, addr: u64, len: u64) -> Vec<BadRange> {
        let cu = self.units.clear;
        let first = addr.div_ceil(cu);
        let last = (addr + len) / cu;
        let per = cu / self.units.consume;
        let mut cleared = Vec::new();
        for c in first..last {
            let units = c * per..(c + 1) * per;
            let had = self.bad.range(units.clone()).next().is_some();
            let bad: Vec<u64> = self.bad.range(units.clone()).copied().collect();
            for u in bad {
                self.bad.remove(&u);
            }
            let known: Vec<u64> = self.known.range(units).copied().collect();
            for u in known {
                self.known.remove(&u);
            }
            if had {
                push_range(&mut cleared, c * cu, cu);
            }
        }
        cleared
    }

    /// Address-range scrub over `[addr, addr + len)`: reports the poisoned clear units not
    /// reported before, coalesced, and adds them to the known list.
    pub fn scrub(&mut self, addr: u64, len: u64) -> Vec<BadRange> {
        let cu = self.units.clear;
        let new: Vec<u64> = self
            .bad
            .range(self.consume_units(addr, len))
            .filter(|u| !self.known.contains(u))
            .copied()
            .collect();
        let mut out = Vec::new();
        for u in new {
            self.known.insert(u);
            let start = u * self.units.consume / cu * cu;
            push_range(&mut out, start, cu);
        }
        out
    }

    /// The kernel's badblocks list: (first sector, count) runs of sectors holding a known
    /// poisoned unit.
    pub fn badblocks(&self) -> Vec<(u64, u64)> {
        let bb = self.units.badblocks;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for u in &self.known {
            let s = u * self.units.consume / bb;
            match runs.last_mut() {
                Some((first, n)) if *first + *n == s => *n += 1,
                Some((first, n)) if *first + *n > s => {}
                _ => runs.push((s, 1)),
            }
        }
        runs
    }

    /// Every poisoned range, coalesced, at the consume unit.
    pub fn ranges(&self) -> Vec<BadRange> {
        let mut out = Vec::new();
        for u in &self.bad {
            push_range(&mut out, u * self.units.consume, self.units.consume);
        }
        out
    }
}

/// Appends `[addr, addr + len)`, merging with the last range if they touch or overlap.
fn push_range(out: &mut Vec<BadRange>, addr: u64, len: u64) {
    if let Some(last) = out.last_mut()
        && last.addr + last.len >= addr
    {
        last.len = last.len.max(addr + len - last.addr);
        return;
    }
    out.push(BadRange { addr, len });
}
