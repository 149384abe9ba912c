//! `pmsim export-store-log`: a run's pmem stores, flushes and fences in the store-log format of
//! valgrind pmemcheck (`--log-stores=yes`), which PMDK's pmreorder reads: one line, records
//! separated by `|`, fields by `;`, numbers in hex:
//!
//! ```text
//! START|REGISTER_FILE;/dev/pmem0;BASE;SIZE;0x0|STORE;ADDR;VALUE;SIZE|FLUSH;ADDR;0x40|FENCE|STOP
//! ```
//!
//! A store's value is its bytes read as a little-endian integer (at most 8 bytes: wider stores
//! are cut into aligned 8-byte words, as pmemcheck logs them). The device is registered at the
//! physical address of its first byte (pfn [`PMEM_BASE_PFN`]). Only the trace threads' steps
//! are logged (the header's mkfs and files are the initial image).

use crate::runner::{PMEM_BASE_PFN, TraceRunner};
use sim_core::platform::{Op, OpKind};
use sim_core::sim::Model;
use sim_core::sim::{RunEnd, Schedule, Sim, SimConfig};

/// One record of a store log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Start,
    Stop,
    RegisterFile {
        path: String,
        base: u64,
        size: u64,
        offset: u64,
    },
    Store {
        addr: u64,
        value: u64,
        size: u64,
    },
    Flush {
        addr: u64,
        size: u64,
    },
    Fence,
}

/// Counts of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreLogStats {
    pub stores: u64,
    pub flushes: u64,
    pub fences: u64,
}

const BASE: u64 = PMEM_BASE_PFN * 4096;

/// Run `sched` and log its memory operations.
pub fn export_store_log(
    runner: &TraceRunner,
    sched: &Schedule,
    step_limit: u64,
) -> Result<(String, StoreLogStats), String> {
    let mut sim = Sim::new(SimConfig {
        seed: sched.seed,
        step_limit,
        record_log: false,
    });
    runner.setup(&mut sim);
    let size = runner.cfg.pmem_size;
    let mut out = vec![
        "START".to_string(),
        format!("REGISTER_FILE;/dev/pmem0;{BASE:#x};{size:#x};0x0"),
    ];
    let mut stats = StoreLogStats::default();
    // A store step: its lines before the step, to compare after it.
    let mut before: Option<(u64, Vec<u8>)> = None;
    let mut i = 0usize;
    let mut bad = None;
    let mut emit_stores =
        |sim: &Sim, before: &mut Option<(u64, Vec<u8>)>, out: &mut Vec<String>| {
            if let Some((addr, old)) = before.take() {
                let mut new = vec![0u8; old.len()];
                if sim.with_machine(|m| m.peek(addr, &mut new)).is_none() {
                    return;
                }
                for w in (0..old.len()).step_by(8) {
                    if old[w..w + 8] != new[w..w + 8] {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&new[w..w + 8]);
                        out.push(format!(
                            "STORE;{:#x};{:#x};0x8",
                            BASE + addr + w as u64,
                            u64::from_le_bytes(b)
                        ));
                        stats.stores += 1;
                    }
                }
            }
        };
    let end = sim.run_steps(|sim, en| {
        emit_stores(sim, &mut before, &mut out);
        let t = if en.len() > 1 {
            match sched.choices.get(i) {
                Some(&c) => {
                    i += 1;
                    match en.iter().find(|t| t.0 == c) {
                        Some(&t) => t,
                        None => {
                            bad = Some(format!("the schedule diverges at choice {i}"));
                            return None;
                        }
                    }
                }
                None => *en
                    .iter()
                    .min_by_key(|t| (sim.task_line(**t), t.0))
                    .expect("enabled tasks"),
            }
        } else {
            en[0]
        };
        let op = sim.next_op(t);
        let mem = (Op::MEM_BASE..Op::MEM_END).contains(&op.obj.0);
        match op.kind {
            OpKind::Write if mem => {
                let addr = u64::from(op.obj.0 - Op::MEM_BASE) * 64;
                let mut old = vec![0u8; 64 * op.arg.max(1) as usize];
                if sim.with_machine(|m| m.peek(addr, &mut old)).is_some() {
                    before = Some((addr, old));
                }
            }
            OpKind::Flush if mem => {
                let addr = u64::from(op.obj.0 - Op::MEM_BASE) * 64;
                out.push(format!("FLUSH;{:#x};0x40", BASE + addr));
                stats.flushes += 1;
            }
            OpKind::Flush if op.obj == Op::NONE => {
                out.push("FENCE".into());
                stats.fences += 1;
            }
            _ => {}
        }
        Some(t)
    });
    emit_stores(&sim, &mut before, &mut out);
    if let Some(b) = bad {
        return Err(b);
    }
    if let RunEnd::Violation(v) = end {
        return Err(format!(
            "the run failed ({}: {}); no store log written",
            v.kind.name(),
            v.message
        ));
    }
    out.push("STOP".into());
    let mut text = out.join("|");
    text.push('\n');
    Ok((text, stats))
}

fn hex(field: Option<&str>, what: &str) -> Result<u64, String> {
    let f = field.ok_or_else(|| format!("{what} missing"))?;
    let h = f
        .strip_prefix("0x")
        .ok_or_else(|| format!("{what} `{f}` is not 0x-hex"))?;
    u64::from_str_radix(h, 16).map_err(|_| format!("{what} `{f}` is not 0x-hex"))
}

/// Parse a store log as pmreorder does (its record kinds and fields), refusing anything else.
pub fn parse_store_log(text: &str) -> Result<Vec<Record>, String> {
    let line = text.trim_end_matches('\n');
    if line.contains('\n') {
        return Err("a store log is one line".into());
    }
    let mut out = Vec::new();
    for (i, rec) in line.split('|').enumerate() {
        let mut f = rec.split(';');
        let kind = f.next().unwrap_or("");
        let at = |e: String| format!("record {i} (`{rec}`): {e}");
        let r = match kind {
            "START" => Record::Start,
            "STOP" => Record::Stop,
            "FENCE" => Record::Fence,
            "REGISTER_FILE" => Record::RegisterFile {
                path: f
                    .next()
                    .ok_or_else(|| at("path missing".into()))?
                    .to_string(),
                base: hex(f.next(), "base").map_err(at)?,
                size: hex(f.next(), "size").map_err(at)?,
                offset: hex(f.next(), "offset").map_err(at)?,
            },
            "STORE" => {
                let addr = hex(f.next(), "address").map_err(at)?;
                let value = hex(f.next(), "value").map_err(at)?;
                let size = hex(f.next(), "size").map_err(at)?;
                if !(1..=8).contains(&size) {
                    return Err(at(format!("store size {size} (1 to 8)")));
                }
                Record::Store { addr, value, size }
            }
            "FLUSH" => {
                let addr = hex(f.next(), "address").map_err(at)?;
                let size = hex(f.next(), "size").map_err(at)?;
                if addr % 64 != 0 {
                    return Err(at("flush address not 64-byte aligned".into()));
                }
                Record::Flush { addr, size }
            }
            other => return Err(at(format!("unknown record `{other}`"))),
        };
        if f.next().is_some() && !matches!(r, Record::Store { .. }) {
            return Err(at("extra fields".into()));
        }
        out.push(r);
    }
    Ok(out)
}
