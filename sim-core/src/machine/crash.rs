//! Crash images: what the persistent memory may hold if power fails now.
//!
//! At a crash point every pending line (a line with stores not yet durable, see `persist`) may
//! be found in its durable state or after any prefix of its pending stores; lines are
//! independent. With `torn`, a store wider than an aligned 8-byte word may also be found
//! partly applied: the line after the stores before it plus any proper non-empty subset of its
//! 8-byte words (aligned 8-byte stores never tear). An image is the persisted image (every
//! line in its durable state) with at most `k` lines in another state; the images are yielded
//! as deltas (a few 64-byte lines) over one copy-on-write snapshot of the persisted image,
//! deduplicated by a 128-bit hash of the delta, in a fixed order: the persisted image first,
//! then one changed line (in address order, each in prefix order), then pairs, and so on.

use super::persist::PendingStore;
use super::pmem::Pmem;
use super::poison::Poison;
use super::{LINE, Line, Machine, MachineConfig, MemError};
use serde::Serialize;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// How to enumerate crash images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CrashOptions {
    /// At most this many lines differ from their durable state.
    pub k: usize,
    /// Stores wider than 8 bytes (or unaligned) may persist in part, at 8-byte granularity.
    pub torn: bool,
    /// Skip images whose content equals one already yielded.
    pub dedup: bool,
}

impl Default for CrashOptions {
    fn default() -> Self {
        CrashOptions {
            k: 2,
            torn: false,
            dedup: true,
        }
    }
}

/// One pending store, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PendingStoreInfo {
    /// The store's global sequence number (`Machine::next_store_seq` before it was issued).
    pub seq: u64,
    pub cpu: usize,
    pub nt: bool,
    /// The aligned 8-byte words of the line it wrote (bit i = bytes 8i..8i+8).
    pub words: u8,
}

/// A line with stores that a crash may lose.
#[derive(Clone, Debug)]
pub struct CrashLine {
    /// Physical address of the line.
    pub addr: u64,
    /// Its content as last made durable.
    pub durable: Line,
    /// Its pending stores, oldest first.
    pub stores: Vec<PendingStoreInfo>,
    /// The line after each pending store.
    after: Vec<Line>,
}

impl CrashLine {
    pub(crate) fn new(line: u64, durable: Line, stores: &[PendingStore]) -> Self {
        CrashLine {
            addr: line * LINE as u64,
            durable,
            stores: stores
                .iter()
                .map(|s| PendingStoreInfo {
                    seq: s.seq,
                    cpu: s.cpu as usize,
                    nt: s.nt,
                    words: s.words,
                })
                .collect(),
            after: stores.iter().map(|s| s.after).collect(),
        }
    }

    /// The states other than the durable one this line may be found in.
    fn choices(&self, torn: bool) -> Vec<Choice> {
        let mut out = Vec::new();
        let mut prev = self.durable;
        for (i, (s, after)) in self.stores.iter().zip(&self.after).enumerate() {
            if torn && s.words.count_ones() > 1 {
                // Proper non-empty subsets of the store's words, in increasing order.
                let mut sub: u8 = 0;
                loop {
                    sub = sub.wrapping_sub(s.words) & s.words;
                    if sub == 0 || sub == s.words {
                        break;
                    }
                    let mut content = prev;
                    for w in (0..8).filter(|w| sub & (1 << w) != 0) {
                        content[w * 8..w * 8 + 8].copy_from_slice(&after[w * 8..w * 8 + 8]);
                    }
                    out.push(Choice {
                        content,
                        persisted: i as u32,
                        torn_words: sub,
                    });
                }
            }
            out.push(Choice {
                content: *after,
                persisted: i as u32 + 1,
                torn_words: 0,
            });
            prev = *after;
        }
        out
    }

    /// `choices(torn).len()` without building them.
    fn choice_count(&self, torn: bool) -> u128 {
        self.stores
            .iter()
            .map(|s| {
                if torn {
                    (1u128 << s.words.count_ones()) - 1
                } else {
                    1
                }
            })
            .sum()
    }
}

#[derive(Clone, Debug)]
struct Choice {
    content: Line,
    persisted: u32,
    torn_words: u8,
}

/// The state one line of an image is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LineChoice {
    pub addr: u64,
    /// How many of the line's pending stores persisted entirely.
    pub persisted: u32,
    /// How many were pending.
    pub pending: u32,
    /// With torn images, the words of store number `persisted` that persisted (0 if none).
    pub torn_words: u8,
}

/// One crash image: the persisted image with `delta` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashImage {
    /// (line address, content) for every line that differs from the persisted image, in
    /// address order.
    pub delta: Vec<(u64, Line)>,
    /// The state chosen for each line that was not left durable.
    pub lines: Vec<LineChoice>,
    /// 128-bit hash of `delta`; equal images have equal hashes.
    pub hash: u128,
}

/// A number of images, exact when it fits in a u128.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ImageCount {
    pub exact: Option<u128>,
    pub log10: f64,
}

impl std::fmt::Display for ImageCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exact {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "~10^{:.1}", self.log10),
        }
    }
}

/// Everything needed to enumerate and materialise the crash images of one moment.
#[derive(Clone, Debug)]
pub struct CrashPoint {
    persisted: Pmem,
    lines: Vec<CrashLine>,
    poison: Poison,
}

impl CrashPoint {
    pub(crate) fn new(persisted: Pmem, lines: Vec<CrashLine>, poison: Poison) -> Self {
        CrashPoint {
            persisted,
            lines,
            poison,
        }
    }

    /// The persisted image: every line in its durable state.
    pub fn persisted(&self) -> &Pmem {
        &self.persisted
    }

    /// The lines a crash may find in more than one state, in address order.
    pub fn pending_lines(&self) -> &[CrashLine] {
        &self.lines
    }

    /// The images allowed with `opts`, lazily. With `dedup`, a line's states equal to its
    /// durable content or to an earlier state of the same line are dropped before the
    /// enumeration (an image choosing one equals an image with fewer lines chosen, which the
    /// enumeration yields anyway), and lines left with no state are not enumerated: the same
    /// distinct images, without building the duplicates that stores rewriting a line with its
    /// own content (a journal header, an inode record's unchanged lines) would make.
    pub fn images(&self, opts: CrashOptions) -> CrashImages<'_> {
        self.images_of(opts, |_| true)
    }

    /// The states of line `l` an image may choose with `opts` (deduplicated as
    /// [`CrashPoint::images`] says).
    fn states(l: &CrashLine, opts: CrashOptions) -> Vec<Choice> {
        let mut c = l.choices(opts.torn);
        if opts.dedup {
            let mut seen: Vec<Line> = vec![l.durable];
            c.retain(|x| {
                let new = !seen.contains(&x.content);
                if new {
                    seen.push(x.content);
                }
                new
            });
        }
        c
    }

    /// The images of [`CrashPoint::images`] that change only lines whose address `keep`
    /// accepts (the others stay durable), in the same order.
    pub fn images_of(&self, opts: CrashOptions, keep: impl Fn(u64) -> bool) -> CrashImages<'_> {
        let mut idx = Vec::new();
        let mut choices: Vec<Vec<Choice>> = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            if !keep(l.addr) {
                continue;
            }
            let c = Self::states(l, opts);
            if !c.is_empty() {
                idx.push(i);
                choices.push(c);
            }
        }
        CrashImages {
            point: self,
            k: opts.k.min(choices.len()),
            idx,
            choices,
            dedup: opts.dedup,
            seen: HashSet::default(),
            comb: Vec::new(),
            odo: Vec::new(),
            done: false,
            duplicates: 0,
        }
    }

    /// The lines `keep` accepts that [`CrashPoint::images`] may change, each with the contents
    /// it may be found in other than its durable one (in address order).
    pub fn line_states(
        &self,
        opts: CrashOptions,
        keep: impl Fn(u64) -> bool,
    ) -> Vec<(u64, Vec<Line>)> {
        self.lines
            .iter()
            .filter(|l| keep(l.addr))
            .map(|l| {
                let c = Self::states(l, opts);
                (l.addr, c.into_iter().map(|c| c.content).collect::<Vec<_>>())
            })
            .filter(|(_, c)| !c.is_empty())
            .collect()
    }

    /// How many images full enumeration (no bound on k, no dedup) would give: the product
    /// over pending lines of (1 + its number of non-durable states).
    pub fn count_full(&self, torn: bool) -> ImageCount {
        let mut exact = Some(1u128);
        let mut log10 = 0.0;
        for l in &self.lines {
            let c = l.choice_count(torn).saturating_add(1);
            exact = exact.and_then(|e| e.checked_mul(c));
            log10 += (c as f64).log10();
        }
        ImageCount { exact, log10 }
    }

    /// How many images `images(opts)` yields before dedup: the sum over j <= k of the j-th
    /// elementary symmetric polynomial of the per-line state counts.
    pub fn count_bounded(&self, opts: CrashOptions) -> ImageCount {
        let k = opts.k.min(self.lines.len());
        let mut e = vec![Some(0u128); k + 1];
        let mut ef = vec![0f64; k + 1];
        e[0] = Some(1);
        ef[0] = 1.0;
        for l in &self.lines {
            let c = l.choice_count(opts.torn);
            for j in (1..=k).rev() {
                e[j] = match (e[j], e[j - 1]) {
                    (Some(a), Some(b)) => b.checked_mul(c).and_then(|bc| a.checked_add(bc)),
                    _ => None,
                };
                ef[j] += ef[j - 1] * c as f64;
            }
        }
        let exact = e.iter().try_fold(0u128, |acc, x| acc.checked_add((*x)?));
        ImageCount {
            exact,
            log10: ef.iter().sum::<f64>().log10(),
        }
    }

    /// `image` with only the lines `keep` accepts (by address) in their chosen state, the
    /// others back in their durable state: an image of the same point with fewer lines
    /// persisted beyond the durable prefix (witness minimisation).
    pub fn subimage(&self, image: &CrashImage, keep: impl Fn(u64) -> bool) -> CrashImage {
        let delta: Vec<(u64, Line)> = image
            .delta
            .iter()
            .filter(|(a, _)| keep(*a))
            .copied()
            .collect();
        let lines = image
            .lines
            .iter()
            .filter(|l| keep(l.addr))
            .copied()
            .collect();
        let hash = hash_delta(&delta);
        CrashImage { delta, lines, hash }
    }

    /// The image as a copy-on-write `Pmem` (shares every page it does not change).
    pub fn materialize(&self, image: &CrashImage) -> Pmem {
        let mut p = self.persisted.clone();
        for (addr, content) in &image.delta {
            p.set_line(addr / LINE as u64, content);
        }
        p
    }

    /// Reads `buf.len()` bytes at `addr` of `image` without materialising it.
    pub fn read(&self, image: &CrashImage, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.persisted.read(addr, buf)?;
        let end = addr + buf.len() as u64;
        let first = image
            .delta
            .partition_point(|(a, _)| a + LINE as u64 <= addr);
        for (a, content) in image.delta[first..].iter().take_while(|(a, _)| *a < end) {
            let lo = addr.max(*a);
            let hi = end.min(a + LINE as u64);
            buf[(lo - addr) as usize..(hi - addr) as usize]
                .copy_from_slice(&content[(lo - a) as usize..(hi - a) as usize]);
        }
        Ok(())
    }

    /// A fresh machine (caches empty, nothing pending) whose pmem is `image` and whose media
    /// keeps the poison it had, for running recovery.
    pub fn recover(&self, image: &CrashImage, config: &MachineConfig) -> Result<Machine, String> {
        if config.pmem_size != self.persisted.size() {
            return Err(format!(
                "recovery machine has {} bytes of pmem, the image {}",
                config.pmem_size,
                self.persisted.size()
            ));
        }
        Machine::with_media(config.clone(), self.materialize(image), self.poison.clone())
    }
}

/// The iterator of [`CrashPoint::images`].
pub struct CrashImages<'a> {
    point: &'a CrashPoint,
    /// The lines enumerated (indices into the point's lines) and their states.
    idx: Vec<usize>,
    choices: Vec<Vec<Choice>>,
    k: usize,
    dedup: bool,
    seen: HashSet<u128, BuildHasherDefault<HashIdentity>>,
    /// The lines in another state than durable (indices, increasing) and their state.
    comb: Vec<usize>,
    odo: Vec<usize>,
    done: bool,
    duplicates: u64,
}

impl CrashImages<'_> {
    /// Images skipped so far because an equal one was yielded before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn build(&self) -> CrashImage {
        let mut delta = Vec::with_capacity(self.comb.len());
        let mut lines = Vec::with_capacity(self.comb.len());
        for (&li, &ci) in self.comb.iter().zip(&self.odo) {
            let line = &self.point.lines[self.idx[li]];
            let c = &self.choices[li][ci];
            lines.push(LineChoice {
                addr: line.addr,
                persisted: c.persisted,
                pending: line.stores.len() as u32,
                torn_words: c.torn_words,
            });
            if c.content != line.durable {
                delta.push((line.addr, c.content));
            }
        }
        let hash = hash_delta(&delta);
        CrashImage { delta, lines, hash }
    }

    /// Steps to the next (lines, states) selection.
    fn advance(&mut self) {
        for i in (0..self.comb.len()).rev() {
            self.odo[i] += 1;
            if self.odo[i] < self.choices[self.comb[i]].len() {
                return;
            }
            self.odo[i] = 0;
        }
        let n = self.choices.len();
        let size = self.comb.len();
        // Next combination of `size` lines out of n, in lexicographic order.
        if let Some(i) = (0..size).rev().find(|&i| self.comb[i] < n - size + i) {
            self.comb[i] += 1;
            for j in i + 1..size {
                self.comb[j] = self.comb[j - 1] + 1;
            }
            return;
        }
        if size == self.k {
            self.done = true;
            return;
        }
        self.comb = (0..=size).collect();
        self.odo = vec![0; size + 1];
    }
}

impl Iterator for CrashImages<'_> {
    type Item = CrashImage;

    fn next(&mut self) -> Option<CrashImage> {
        while !self.done {
            let image = self.build();
            self.advance();
            if self.dedup && !self.seen.insert(image.hash) {
                self.duplicates += 1;
                continue;
            }
            return Some(image);
        }
        None
    }
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
pub(crate) struct HashIdentity(u64);

impl Hasher for HashIdentity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Two independent 64-bit multiply-fold lanes over the delta's words.
fn hash_delta(delta: &[(u64, Line)]) -> u128 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const K3: u64 = 0x1656_67b1_9e37_79f9;
    let mut a = 0x243f_6a88_85a3_08d3u64;
    let mut b = 0x1319_8a2e_0370_7344u64;
    let mut feed = |w: u64| {
        a = fold_mul(a ^ w, K1);
        b = fold_mul(b ^ w.rotate_left(32), K2) ^ a.rotate_left(17);
    };
    for (addr, content) in delta {
        feed(*addr);
        for word in content.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            feed(u64::from_le_bytes(w));
        }
    }
    feed(delta.len() as u64);
    let a = fold_mul(a, K3);
    let b = fold_mul(b, K1 ^ K3);
    (u128::from(a) << 64) | u128::from(b)
}
