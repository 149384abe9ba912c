//! The data oracle's bytes of one file, by 4 KiB page: cloning shares the pages, a change
//! copies only the pages it touches. A search starts every run from the trace's initial
//! contents; with one flat buffer a run's first store into a 2 MiB file copied all of it.

use std::borrow::Cow;
use std::sync::Arc;

const PAGE: usize = 4096;

type Page = Arc<[u8; PAGE]>;

thread_local! {
    /// The page of zeros every untouched page of a hole shares.
    static ZERO: Page = Arc::new([0u8; PAGE]);
}

fn zero_page() -> Page {
    ZERO.with(Arc::clone)
}

/// A file's bytes as the execution implies them.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileBytes {
    len: usize,
    /// `len.div_ceil(PAGE)` pages; the bytes of the last one past `len` are zero (see
    /// [`FileBytes::check`]).
    pages: Vec<Page>,
}

impl FileBytes {
    pub(crate) fn zeroed(len: usize) -> FileBytes {
        FileBytes {
            len,
            pages: vec![zero_page(); len.div_ceil(PAGE)],
        }
    }

    /// `len` bytes of `byte`: the whole pages share one page.
    pub(crate) fn filled(byte: u8, len: usize) -> FileBytes {
        let page: Page = Arc::new([byte; PAGE]);
        let mut f = FileBytes {
            len,
            pages: vec![page; len / PAGE],
        };
        if !len.is_multiple_of(PAGE) {
            let mut last = [0u8; PAGE];
            last[..len % PAGE].fill(byte);
            f.pages.push(Arc::new(last));
        }
        f
    }

    pub(crate) fn from_slice(b: &[u8]) -> FileBytes {
        let pages = b
            .chunks(PAGE)
            .map(|c| {
                let mut page = [0u8; PAGE];
                page[..c.len()].copy_from_slice(c);
                Arc::new(page)
            })
            .collect();
        FileBytes {
            len: b.len(),
            pages,
        }
    }

    /// Change the bytes as one buffer (for changes that shift them: every page is rebuilt).
    pub(crate) fn edit_flat(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut v = self.to_vec();
        f(&mut v);
        *self = FileBytes::from_slice(&v);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, i: usize) -> Option<u8> {
        (i < self.len).then(|| self.pages[i / PAGE][i % PAGE])
    }

    /// Bytes `s..e` (within the file): borrowed when they lie in one page.
    pub(crate) fn range(&self, s: usize, e: usize) -> Cow<'_, [u8]> {
        assert!(
            s <= e && e <= self.len,
            "range {s}..{e} of {} bytes",
            self.len
        );
        if s == e {
            return Cow::Borrowed(&[]);
        }
        if s / PAGE == (e - 1) / PAGE {
            let o = s / PAGE * PAGE;
            return Cow::Borrowed(&self.pages[s / PAGE][s - o..e - o]);
        }
        let mut v = Vec::with_capacity(e - s);
        let mut at = s;
        while at < e {
            let n = (PAGE - at % PAGE).min(e - at);
            v.extend_from_slice(&self.pages[at / PAGE][at % PAGE..at % PAGE + n]);
            at += n;
        }
        Cow::Owned(v)
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.range(0, self.len).into_owned()
    }

    /// Whether the file holds exactly `b`.
    pub(crate) fn eq_bytes(&self, b: &[u8]) -> bool {
        self.len == b.len()
            && self
                .pages
                .iter()
                .zip(b.chunks(PAGE))
                .all(|(p, c)| p[..c.len()] == *c)
    }

    /// Store `b` at `pos`, growing the file (with zeros) to reach its end.
    pub(crate) fn write(&mut self, pos: usize, b: &[u8]) {
        if self.len < pos + b.len() {
            self.resize(pos + b.len());
        }
        let mut done = 0;
        while done < b.len() {
            let at = pos + done;
            let n = (PAGE - at % PAGE).min(b.len() - done);
            Arc::make_mut(&mut self.pages[at / PAGE])[at % PAGE..at % PAGE + n]
                .copy_from_slice(&b[done..done + n]);
            done += n;
        }
    }

    /// Zero bytes `pos..pos + n` that lie within the file.
    pub(crate) fn zero(&mut self, pos: usize, n: usize) {
        let (s, e) = (pos.min(self.len), pos.saturating_add(n).min(self.len));
        let mut at = s;
        while at < e {
            let k = (PAGE - at % PAGE).min(e - at);
            let page = &mut self.pages[at / PAGE];
            if k == PAGE {
                *page = zero_page();
            } else {
                Arc::make_mut(page)[at % PAGE..at % PAGE + k].fill(0);
            }
            at += k;
        }
    }

    /// Cut or extend (with zeros) to `len` bytes.
    pub(crate) fn resize(&mut self, len: usize) {
        if len < self.len {
            self.pages.truncate(len.div_ceil(PAGE));
            if !len.is_multiple_of(PAGE) {
                let last = self.pages.last_mut().expect("a partial page");
                Arc::make_mut(last)[len % PAGE..].fill(0);
            }
        } else {
            self.pages.resize(len.div_ceil(PAGE), zero_page());
        }
        self.len = len;
    }

    /// Panics unless the invariant holds: as many pages as `len` needs, zero past `len`.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.pages.len(), self.len.div_ceil(PAGE));
        if let Some(last) = self.pages.last() {
            let used = self.len - (self.pages.len() - 1) * PAGE;
            assert!(last[used..].iter().all(|&x| x == 0), "bytes past the end");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation does to the pages what it does to one flat buffer: random writes,
    /// zeroings, resizes and reads of every size across page boundaries, on clones that share
    /// pages with each other (a change to one leaves the others as they were), from bytes of
    /// every value and from one byte repeated ([`FileBytes::filled`]).
    #[test]
    fn paged_bytes_behave_as_one_flat_buffer() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for round in 0..40 {
            let len0 = [0, 1, 4095, 4096, 4097, 3 * 4096 + 5][round % 6];
            let (init, start) = if round % 4 == 3 {
                (vec![0x5a; len0], FileBytes::filled(0x5a, len0))
            } else {
                let v: Vec<u8> = (0..len0).map(|i| (i % 251) as u8 + 1).collect();
                let f = FileBytes::from_slice(&v);
                (v, f)
            };
            let mut flat = vec![init];
            let mut paged = vec![start];
            for _ in 0..60 {
                let k = next(flat.len());
                let (f, p) = (&mut flat[k], &mut paged[k]);
                let span = [1, 7, 4096, 5000, 9000][next(5)];
                let pos = next(f.len() + 4097);
                let n = next(span) + 1;
                match next(5) {
                    0 => {
                        let b: Vec<u8> = (0..n).map(|_| next(255) as u8 + 1).collect();
                        if f.len() < pos + n {
                            f.resize(pos + n, 0);
                        }
                        f[pos..pos + n].copy_from_slice(&b);
                        p.write(pos, &b);
                    }
                    1 => {
                        let (s, e) = (pos.min(f.len()), (pos + n).min(f.len()));
                        f[s..e].fill(0);
                        p.zero(pos, n);
                    }
                    2 => {
                        let len = next(4 * 4096 + 3);
                        f.resize(len, 0);
                        p.resize(len);
                    }
                    3 => {
                        let (fc, pc) = (f.clone(), p.clone());
                        flat.push(fc);
                        paged.push(pc);
                    }
                    _ => {
                        let s = pos.min(f.len());
                        let e = (s + n).min(f.len());
                        assert_eq!(*p.range(s, e), f[s..e]);
                        assert_eq!(p.get(pos), f.get(pos).copied());
                    }
                }
            }
            for (f, p) in flat.iter().zip(&paged) {
                p.check();
                assert_eq!(p.len(), f.len());
                assert_eq!(p.to_vec(), *f);
                assert!(p.eq_bytes(f));
                let mut other = f.clone();
                if let Some(b) = other.last_mut() {
                    *b ^= 1;
                    assert!(!p.eq_bytes(&other));
                }
            }
        }
    }
}
