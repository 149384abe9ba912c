//! The redo journal: metadata changes are collected in memory (the CIL, as XFS's committed item
//! list) and made durable together by a log force ([`xlog_force`]), which writes them to the
//! journal region, commits, then checkpoints them in place.
//!
//! **On media** (at `journal_start`, `journal_blocks` blocks):
//!
//! | offset | size | content |
//! | --- | --- | --- |
//! | 0 | 64 | header: magic u32 ([`JH_MAGIC`] a transaction is written, [`JE_MAGIC`] empty), 0 u32, seq u64, records u32, 0 u32, payload bytes u64, checksum u64 |
//! | 64 | payload | records: device address u64, length u32, 0 u32, `length` bytes padded to 8 |
//! | 64 + payload rounded up to 64 | 64 | commit record: [`JC_MAGIC`] u32, 0 u32, seq u64, checksum u64 |
//!
//! The checksum (FNV-1a) covers the sequence number, the record count and the payload.
//!
//! **Protocol** of one log force, each step durable (stores, `clwb` of every line, `sfence`)
//! before the next begins:
//! 1. header and records;
//! 2. commit record (it cannot persist before the records: the fence of step 1 orders them);
//! 3. every record written in place;
//! 4. the header marked empty (keeping the sequence number).
//!
//! **Recovery** (mount): a header with [`JH_MAGIC`] whose commit record has the same sequence
//! number and checksum is replayed (steps 3 and 4 again; replaying is idempotent); any other
//! transaction (a crash before step 2 completed) is discarded. Sequence numbers only grow, so a
//! stale commit record of an earlier transaction never matches.

use crate::FsError;
use crate::layout::{Geometry, checksum, get_u32, get_u64, put_u32, put_u64};
use sim_core::PmemPlatform;
use sim_core::machine::LINE;
use std::collections::BTreeMap;

pub const JH_MAGIC: u32 = u32::from_le_bytes(*b"DXJH");
pub const JE_MAGIC: u32 = u32::from_le_bytes(*b"DXJE");
pub const JC_MAGIC: u32 = u32::from_le_bytes(*b"DXJC");
pub const JHEADER: u64 = 64;
pub const JCOMMIT: u64 = 64;
const RECORD_HEADER: u64 = 16;

/// Where a log force stops when a test simulates a power failure in the middle of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitPhase {
    /// Header and records are durable; no commit record.
    LogWritten,
    /// The commit record is durable; nothing written in place.
    Committed,
    /// Written in place; the header not yet marked empty.
    Checkpointed,
}

/// The journal's in-memory state (the CIL and the sequence numbers), inside the file system's
/// log mutex.
#[derive(Debug)]
pub struct Log {
    /// The sequence number the next log force writes; changes collected now belong to it.
    pub open_seq: u64,
    /// The last sequence number that is durable (0: none since mkfs).
    pub committed_seq: u64,
    /// Metadata units to write: device address -> new content. Units never overlap (inode
    /// records, 64-byte lines of the bitmap and of the refcount table).
    pub cil: BTreeMap<u64, Vec<u8>>,
    /// Bytes the CIL needs in the journal (record headers included).
    pub cil_bytes: u64,
    /// Payload bytes that fit in the journal.
    pub capacity: u64,
    /// Log forces that wrote something.
    pub forces: u64,
    /// Test knob: stop the next log force after this phase, as a power failure would.
    pub stop_at: Option<CommitPhase>,
    /// A log force stopped (test knob) or failed: the log is shut down, later forces fail.
    pub shutdown: bool,
    /// Bug mode `journal-no-fence`: the commit record is written back (clwb) but not fenced
    /// before the checkpoint writes in place, so those may persist before the commit record
    /// does; a crash then leaves half a transaction in place and recovery discards the
    /// uncommitted journal copy that would have repaired it. (Dropping the fence between the
    /// log body and the commit record instead would be harmless here: the commit record's
    /// checksum covers the body, so a commit that overtook its body is discarded.)
    pub no_commit_fence: bool,
    /// Bug mode `torn-inode-size`: a size-only change of an inode whose record is on media
    /// (not in the CIL) is written in place with one 16-byte store instead of a transaction
    /// (`Daxfs::setfilesize`); a crash may persist one 8-byte word of it.
    pub torn_inode_size: bool,
}

impl Log {
    pub fn new(geo: &Geometry, last_seq: u64) -> Log {
        Log {
            open_seq: last_seq + 1,
            committed_seq: last_seq,
            cil: BTreeMap::new(),
            cil_bytes: 0,
            capacity: geo.journal_bytes() - JHEADER - JCOMMIT,
            forces: 0,
            stop_at: None,
            shutdown: false,
            no_commit_fence: false,
            torn_inode_size: false,
        }
    }

    /// Journal bytes a unit of `len` bytes takes.
    pub fn record_bytes(len: usize) -> u64 {
        RECORD_HEADER + (len as u64).next_multiple_of(8)
    }

    /// Add one transaction's units to the CIL (replacing older content of the same units).
    pub fn insert(&mut self, units: Vec<(u64, Vec<u8>)>) {
        for (addr, data) in units {
            let new = Log::record_bytes(data.len());
            if let Some(old) = self.cil.insert(addr, data) {
                self.cil_bytes -= Log::record_bytes(old.len());
            }
            self.cil_bytes += new;
        }
    }

    /// Whether sequence `seq` is durable.
    pub fn is_durable(&self, seq: u64) -> bool {
        seq <= self.committed_seq
    }
}

/// Header + records of a transaction, and its commit record.
pub fn encode_transaction(seq: u64, units: &BTreeMap<u64, Vec<u8>>) -> (Vec<u8>, [u8; 64]) {
    let mut payload = Vec::new();
    for (&addr, data) in units {
        let mut h = [0u8; RECORD_HEADER as usize];
        put_u64(&mut h, 0, addr);
        put_u32(&mut h, 8, data.len() as u32);
        payload.extend_from_slice(&h);
        payload.extend_from_slice(data);
        payload.resize(payload.len().next_multiple_of(8), 0);
    }
    let sum = txn_checksum(seq, units.len() as u32, &payload);
    let mut out = vec![0u8; JHEADER as usize];
    put_u32(&mut out, 0, JH_MAGIC);
    put_u64(&mut out, 8, seq);
    put_u32(&mut out, 16, units.len() as u32);
    put_u64(&mut out, 24, payload.len() as u64);
    put_u64(&mut out, 32, sum);
    out.extend_from_slice(&payload);
    let mut commit = [0u8; JCOMMIT as usize];
    put_u32(&mut commit, 0, JC_MAGIC);
    put_u64(&mut commit, 8, seq);
    put_u64(&mut commit, 16, sum);
    (out, commit)
}

fn txn_checksum(seq: u64, nrec: u32, payload: &[u8]) -> u64 {
    let mut b = Vec::with_capacity(12 + payload.len());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&nrec.to_le_bytes());
    b.extend_from_slice(payload);
    checksum(&b)
}

/// The empty header with sequence number `seq`.
pub fn empty_header(seq: u64) -> [u8; 64] {
    let mut h = [0u8; 64];
    put_u32(&mut h, 0, JE_MAGIC);
    put_u64(&mut h, 8, seq);
    h
}

/// Offset of the commit record in the journal, for a payload of `payload` bytes.
pub fn commit_offset(payload: u64) -> u64 {
    JHEADER + payload.next_multiple_of(LINE as u64)
}

/// What the journal region holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalState {
    /// Nothing to replay; the last sequence number used.
    Empty { seq: u64 },
    /// A transaction without a (matching) commit record: discarded by recovery.
    Uncommitted { seq: u64, why: String },
    /// A committed transaction to replay.
    Committed {
        seq: u64,
        records: Vec<(u64, Vec<u8>)>,
    },
    /// The header is neither a transaction nor empty.
    Corrupt(String),
}

/// Parse the journal region `j` (its bytes from `journal_start`).
pub fn parse_journal(j: &[u8]) -> JournalState {
    let magic = get_u32(j, 0);
    let seq = get_u64(j, 8);
    if magic == JE_MAGIC {
        return JournalState::Empty { seq };
    }
    if magic != JH_MAGIC {
        return JournalState::Corrupt(format!("header magic {magic:#x}"));
    }
    let nrec = get_u32(j, 16);
    let plen = get_u64(j, 24);
    let sum = get_u64(j, 32);
    let cap = j.len() as u64 - JHEADER - JCOMMIT;
    if plen > cap {
        return JournalState::Uncommitted {
            seq,
            why: format!("payload of {plen} bytes exceeds the journal"),
        };
    }
    let c = commit_offset(plen) as usize;
    if get_u32(j, c) != JC_MAGIC || get_u64(j, c + 8) != seq || get_u64(j, c + 16) != sum {
        return JournalState::Uncommitted {
            seq,
            why: "no commit record".into(),
        };
    }
    let payload = &j[JHEADER as usize..(JHEADER + plen) as usize];
    if txn_checksum(seq, nrec, payload) != sum {
        return JournalState::Uncommitted {
            seq,
            why: "checksum mismatch".into(),
        };
    }
    let mut records = Vec::new();
    let mut o = 0usize;
    for _ in 0..nrec {
        if o + RECORD_HEADER as usize > payload.len() {
            return JournalState::Corrupt("record runs past the payload".into());
        }
        let addr = get_u64(payload, o);
        let len = get_u32(payload, o + 8) as usize;
        let start = o + RECORD_HEADER as usize;
        if start + len > payload.len() {
            return JournalState::Corrupt("record runs past the payload".into());
        }
        records.push((addr, payload[start..start + len].to_vec()));
        o = start + len.next_multiple_of(8);
    }
    JournalState::Committed { seq, records }
}

/// Store `data` at `addr` and write back every line it touches (no fence).
pub async fn store_clwb<P: PmemPlatform>(p: &P, addr: u64, data: &[u8]) -> Result<(), FsError> {
    p.pmem_store(addr, data).await.map_err(FsError::from_mem)?;
    let line = LINE as u64;
    let mut a = addr / line * line;
    while a < addr + data.len() as u64 {
        p.clwb(a).await.map_err(FsError::from_mem)?;
        a += line;
    }
    Ok(())
}

pub async fn sfence<P: PmemPlatform>(p: &P) -> Result<(), FsError> {
    p.sfence().await.map_err(FsError::from_mem)
}

/// `xlog_force`: make the CIL durable (journal, commit, checkpoint in place, empty the
/// journal). Called with the log mutex held, so forces are serialised.
pub async fn xlog_force<P: PmemPlatform>(
    p: &P,
    geo: &Geometry,
    log: &mut Log,
) -> Result<(), FsError> {
    if log.shutdown {
        return Err(FsError::EIO);
    }
    if log.cil.is_empty() {
        return Ok(());
    }
    let seq = log.open_seq;
    let (head, commit) = encode_transaction(seq, &log.cil);
    // The journal holds every transaction the CIL can grow to (`commit_trans` forces first).
    assert!(
        head.len() as u64 - JHEADER <= log.capacity,
        "the CIL outgrew the journal"
    );
    let j = geo.journal_addr();
    let stop = log.stop_at;
    let result = async {
        store_clwb(p, j, &head).await?;
        sfence(p).await?;
        if stop == Some(CommitPhase::LogWritten) {
            return Ok(false);
        }
        store_clwb(p, j + commit_offset(head.len() as u64 - JHEADER), &commit).await?;
        if !log.no_commit_fence {
            sfence(p).await?;
        }
        if stop == Some(CommitPhase::Committed) {
            return Ok(false);
        }
        for (&addr, data) in &log.cil {
            store_clwb(p, addr, data).await?;
        }
        sfence(p).await?;
        if stop == Some(CommitPhase::Checkpointed) {
            return Ok(false);
        }
        store_clwb(p, j, &empty_header(seq)).await?;
        sfence(p).await?;
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => {
            log.forces += 1;
            log.committed_seq = seq;
            log.open_seq = seq + 1;
            log.cil.clear();
            log.cil_bytes = 0;
            Ok(())
        }
        Ok(false) | Err(_) => {
            // A stopped (simulated power failure) or failed force shuts the log down: the
            // in-place state may be half written, and only recovery may go on from here.
            log.shutdown = true;
            Err(result.err().unwrap_or(FsError::EIO))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_round_trip_and_torn_ones_are_rejected() {
        let mut units = BTreeMap::new();
        units.insert(0x1000u64, vec![7u8; 13]);
        units.insert(0x2040u64, vec![9u8; 64]);
        let (head, commit) = encode_transaction(5, &units);
        let mut j = vec![0u8; 16 << 10];
        j[..head.len()].copy_from_slice(&head);
        // Without the commit record: uncommitted.
        assert!(matches!(
            parse_journal(&j),
            JournalState::Uncommitted { seq: 5, .. }
        ));
        let c = commit_offset(head.len() as u64 - JHEADER) as usize;
        j[c..c + 64].copy_from_slice(&commit);
        let JournalState::Committed { seq, records } = parse_journal(&j) else {
            panic!("committed")
        };
        assert_eq!(seq, 5);
        assert_eq!(records, units.into_iter().collect::<Vec<_>>());
        // A record byte that did not persist: checksum mismatch.
        j[JHEADER as usize + 20] ^= 1;
        assert!(matches!(
            parse_journal(&j),
            JournalState::Uncommitted { .. }
        ));
        j[..64].copy_from_slice(&empty_header(5));
        assert_eq!(parse_journal(&j), JournalState::Empty { seq: 5 });
        j[0] = 0;
        assert!(matches!(parse_journal(&j), JournalState::Corrupt(_)));
    }
}
