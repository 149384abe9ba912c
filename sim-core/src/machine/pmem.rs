//! A byte image of the persistent memory: sparse (pages never written read as zero) and
//! copy-on-write (cloning shares every page; a write copies only the page it touches), so crash
//! images and recovery machines cost a few page copies, not a copy of the device.

use super::{LINE, Line, MemError};
use std::sync::Arc;

const PAGE: usize = 4096;
const CHUNK_PAGES: usize = 512;
const CHUNK_BYTES: u64 = (PAGE * CHUNK_PAGES) as u64;

type Page = [u8; PAGE];

#[derive(Clone, Default)]
struct Chunk {
    pages: Vec<Option<Arc<Page>>>,
}

/// A sparse, copy-on-write image of `size` bytes of pmem.
#[derive(Clone)]
pub struct Pmem {
    size: u64,
    chunks: Vec<Option<Arc<Chunk>>>,
}

impl std::fmt::Debug for Pmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pmem")
            .field("size", &self.size)
            .field("pages", &self.resident_pages())
            .finish()
    }
}

impl Pmem {
    /// An all-zero image of `size` bytes.
    pub fn new(size: u64) -> Self {
        let chunks = size.div_ceil(CHUNK_BYTES) as usize;
        Pmem {
            size,
            chunks: vec![None; chunks],
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pages that hold data (were written at least once).
    pub fn resident_pages(&self) -> usize {
        self.chunks
            .iter()
            .flatten()
            .map(|c| c.pages.iter().flatten().count())
            .sum()
    }

    pub(crate) fn check(&self, addr: u64, len: u64) -> Result<(), MemError> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemError::OutOfRange { addr, len }),
        }
    }

    /// Copies `buf.len()` bytes at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(addr, buf.len() as u64)?;
        self.read_unchecked(addr, buf);
        Ok(())
    }

    /// Writes `data` at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.check(addr, data.len() as u64)?;
        self.write_unchecked(addr, data);
        Ok(())
    }

    /// The whole image as one vector (tests and small images only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.size as usize];
        self.read_unchecked(0, &mut v);
        v
    }

    /// A hash of the content (FNV-1a over every page that is not all zero, with its number):
    /// equal images hash equal however they were written.
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            for (i, page) in chunk.pages.iter().enumerate() {
                let Some(page) = page else { continue };
                if page.iter().all(|&b| b == 0) {
                    continue;
                }
                let pfn = (c * CHUNK_PAGES + i) as u64;
                pfn.to_le_bytes().into_iter().for_each(&mut eat);
                page.iter().copied().for_each(&mut eat);
            }
        }
        h
    }

    fn page(&self, pfn: u64) -> Option<&Page> {
        let chunk = self
            .chunks
            .get((pfn / CHUNK_PAGES as u64) as usize)?
            .as_ref()?;
        chunk.pages[(pfn % CHUNK_PAGES as u64) as usize].as_deref()
    }

    fn page_mut(&mut self, pfn: u64) -> &mut Page {
        let chunk = self.chunks[(pfn / CHUNK_PAGES as u64) as usize].get_or_insert_with(|| {
            Arc::new(Chunk {
                pages: vec![None; CHUNK_PAGES],
            })
        });
        let chunk = Arc::make_mut(chunk);
        let page = chunk.pages[(pfn % CHUNK_PAGES as u64) as usize]
            .get_or_insert_with(|| Arc::new([0; PAGE]));
        Arc::make_mut(page)
    }

    pub(crate) fn read_unchecked(&self, mut addr: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let off = (addr % PAGE as u64) as usize;
            let n = (PAGE - off).min(buf.len() - done);
            match self.page(addr / PAGE as u64) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
            addr += n as u64;
        }
    }

    pub(crate) fn write_unchecked(&mut self, mut addr: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let off = (addr % PAGE as u64) as usize;
            let n = (PAGE - off).min(data.len() - done);
            let page = self.page_mut(addr / PAGE as u64);
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            addr += n as u64;
        }
    }

    /// The 64 bytes of cache line `line` (line index, not address).
    pub(crate) fn line(&self, line: u64) -> Line {
        let mut l = [0; LINE];
        let addr = line * LINE as u64;
        if let Some(p) = self.page(addr / PAGE as u64) {
            let off = (addr % PAGE as u64) as usize;
            l.copy_from_slice(&p[off..off + LINE]);
        }
        l
    }

    pub(crate) fn set_line(&mut self, line: u64, data: &Line) {
        let addr = line * LINE as u64;
        let off = (addr % PAGE as u64) as usize;
        self.page_mut(addr / PAGE as u64)[off..off + LINE].copy_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_reads_zero_and_clones_are_independent() {
        let mut a = Pmem::new(8 << 20);
        let mut buf = [1u8; 16];
        a.read(4090, &mut buf).unwrap();
        assert_eq!(buf, [0; 16]);
        a.write(4090, &[7; 16]).unwrap();
        let b = a.clone();
        a.write(4090, &[9; 4]).unwrap();
        b.read(4090, &mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
        a.read(4090, &mut buf).unwrap();
        assert_eq!(&buf[..5], &[9, 9, 9, 9, 7]);
        assert_eq!(a.resident_pages(), 2);
        assert!(a.read(8 << 20, &mut buf).is_err());
        assert!(a.write(u64::MAX, &[0]).is_err());
    }
}
