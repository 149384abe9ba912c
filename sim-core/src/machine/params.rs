//! Media and memory-path parameters, the presets `optane-like`, `cxl-like` and `dram`, and
//! override by name (`MediaParams::set`), as the trace's `machine key=value` line and the CLI's
//! `--media-param key=value` need.
//!
//! Sources. The media values are those of pm_hw.md section 7 ("Proposed default media
//! parameters"), which derives them from Yang et al., *An Empirical Guide to the Behavior and Use
//! of Scalable Persistent Memory* (FAST'20), Izraelevitz et al., *Basic Performance Measurements
//! of the Intel Optane DC PMM* (arXiv 1903.05714, the NVSL/OptaneStudy CSVs), the VANS
//! configuration (MICRO'20) and Pond (ASPLOS'23). The CPU-side values (cache, store, flush and
//! fence costs, memory-level parallelism) are not in that table: they are estimates, calibrated
//! once so that the single-thread persist latencies of OptaneStudy `12-flush_instr_lat.csv` come
//! out right, and are marked `[E]` below.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which parts of the machine survive a power failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistDomain {
    /// Asynchronous DRAM Refresh: the memory controller's write-pending queue (WPQ) is in the
    /// power-fail domain, the CPU caches are not. Explicit flushes are needed.
    Adr,
    /// Enhanced ADR: the CPU caches are flushed on power failure too, so a store is durable once
    /// it is globally visible (`persistence_domain == "cpu_cache"` in sysfs).
    Eadr,
}

/// The CPU vendor, which changes one ordering rule: on AMD, `clflush` is ordered by `mfence`
/// only, not by `sfence` (crash_checkers.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuVendor {
    Intel,
    Amd,
}

/// The names accepted by [`MediaParams::preset`].
pub const PRESETS: &[&str] = &["optane-like", "cxl-like", "dram"];

/// Every timing, geometry and persistence parameter of the machine model. Times are in
/// nanoseconds (fractions allowed), sizes in bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaParams {
    /// The preset these values started from.
    pub preset: String,

    // ---- media, pm_hw.md section 7 ----
    /// Media access unit (Optane XPLine 256 B; CXL and DRAM 64 B). The CPU line is always 64 B.
    pub unit: u64,
    /// Idle load latency when the unit is already in the on-DIMM buffer (sequential hit).
    pub read_hit_ns: f64,
    /// Idle load latency when the unit must be read from the media (random access).
    pub read_miss_ns: f64,
    /// From a write-back (clwb, clflush, eviction) leaving the core to its acceptance into the
    /// persistence domain (the WPQ under ADR).
    pub clwb_accept_ns: f64,
    /// From a full write-combining buffer leaving the core to its acceptance into the WPQ.
    pub ntstore_accept_ns: f64,
    /// Media read occupancy per unit (Optane: 39 ns per 256 B, i.e. 6.5 GB/s per DIMM).
    pub read_service_ns: f64,
    /// Media write occupancy per unit (Optane: 116 ns per 256 B, i.e. 2.2 GB/s per DIMM).
    pub write_service_ns: f64,
    /// On-DIMM write-combining buffer (Optane XPBuffer 16 KiB = 64 x 256 B); 0 = none. A unit
    /// evicted while only partly written costs a read-modify-write.
    pub wc_buffer: u64,
    /// Write-pending-queue entries (64 B each) per channel (VANS config: 4).
    pub wpq_depth: u32,
    /// Interleave granularity across DIMMs (4 KiB on the FAST'20 platform).
    pub interleave: u64,
    /// Number of interleaved DIMMs (one per channel).
    pub ways: u32,
    /// Write bandwidth is multiplied by min(1, (writers / w)^exponent) with w the number of
    /// threads writing a DIMM (see `contention_scope`; "4" in section 7).
    pub contention_writers: f64,
    /// The exponent of the contention formula (0.6 in section 7); 0 disables contention.
    pub contention_exponent: f64,
    /// How recently a thread must have written to a DIMM to count as one of its writers when
    /// `contention_scope` is 0, and how recently a thread must have read (read contention)
    /// or a remote CPU accessed a DIMM (remote factors). [E]
    pub contention_window_ns: f64,
    /// Write contention scope (mechanism 3): which threads count as writers of a DIMM, among
    /// those whose latest write arrived within `contention_window_ns`. 1 = each by its share
    /// of its last `mlp` written lines that went to the DIMM, so threads spread over six
    /// interleaved DIMMs count a sixth each (per-DIMM WPQ/XPBuffer contention from the traffic
    /// actually sent there); 2 = each whose last `mlp` written lines include one to the DIMM;
    /// 0 = each that wrote to the DIMM at all within the window, so six DIMMs collapse after 4
    /// threads in total. Source: 04-bandwidth_thcount_optane.csv, six DIMMs, random 256 B
    /// writes: 12.5 GB/s at 4 threads, still 12.0 at 8, where one DIMM (the _ni file) holds
    /// 2.2 GB/s to 4 threads only.
    pub contention_scope: u32,
    /// Probability that a media write to a hot set pays `tail_ns` (wear levelling, AIT remap).
    pub tail_probability: f64,
    /// The tail latency added to such a write (about 50 us, 03-tail_latency.csv).
    pub tail_ns: f64,
    /// A write is to the hot set if its unit was written within the last `tail_hot_set` bytes
    /// of media writes on that DIMM (32 KiB).
    pub tail_hot_set: u64,
    /// Readers per DIMM before media reads slow down (mechanism 1, see `read_contention_exponent`).
    pub read_contention_readers: f64,
    /// Read contention on one DIMM: media read time is multiplied by (r / readers)^exponent
    /// once r, the thread-equivalents reading the DIMM, exceeds `read_contention_readers`.
    /// Source: 04-bandwidth_thcount_optane_ni.csv, one DIMM, 6.5 GB/s at 3-4 threads falling to
    /// 3.9 GB/s at 24: (24/4)^e = 6.5/3.9 gives e = 0.285. 0 disables.
    pub read_contention_exponent: f64,
    /// Read/write interference (mechanism 2): the fraction of each media write's time during
    /// which demand reads of the same DIMM cannot be served, and of each media read's time
    /// during which writes cannot start. 1 = reads and writes share the media banks (Optane:
    /// 17-numa.csv local, 4 threads, a 3:1 read:write mix gets 12.7 GB/s, less than the
    /// 14.6 GB/s of pure reads); 0 = independent pipelines.
    pub rw_interference: f64,
    /// Read for ownership through the media (mechanism 4): 1 = a store that misses the cache
    /// reads its unit from the DIMM (media read pipeline, DIMM buffer, read/write
    /// interference), so store+clwb moves each unit twice where ntstore moves it once
    /// (13-sfence_interval.csv: one thread, clwb 1.1-1.3 GB/s, ntstore 2.2 GB/s); 0 = the RFO
    /// costs only `rfo_ns` of latency.
    pub rfo_media: u32,
    /// Sockets the CPUs are spread over. 1 = no NUMA.
    pub sockets: u32,
    /// The socket the pmem hangs off; CPUs of other sockets are remote. `pmem_socket = sockets`
    /// puts it on a socket with none of the machine's CPUs, so every CPU is remote (a single
    /// remote thread, 17-numa.csv).
    pub pmem_socket: u32,
    /// Extra latency of a remote access.
    pub remote_latency_ns: f64,
    /// Remote read bandwidth factor (17-numa.csv: 0.9).
    pub remote_read_factor: f64,
    /// Remote write bandwidth factor (0.4).
    pub remote_write_factor: f64,
    /// Remote bandwidth factor when a DIMM serves remote reads and writes at once (0.17-0.35).
    pub remote_mixed_factor: f64,
    /// The persistence domain: ADR (WPQ) or eADR (caches too).
    pub persist: PersistDomain,
    /// Poison ladder: the unit a load consumes (machine check), 64 B.
    pub poison_consume: u64,
    /// Poison ladder: ECC and clear unit (ARS `clear_err_unit`; Optane 256 B, CXL 64 B).
    pub poison_clear: u64,
    /// Poison ladder: kernel badblocks sector, 512 B.
    pub poison_badblocks: u64,
    /// Poison ladder: memory_failure and SIGBUS granularity, a 4 KiB page.
    pub poison_signal: u64,

    // ---- CPU side [E] ----
    /// The CPU vendor (ordering of clflush).
    pub vendor: CpuVendor,
    /// Last-level cache capacity (0 = no cache model: every access misses). [E: Xeon 8260]
    pub cache: u64,
    /// Last-level cache associativity. [E]
    pub cache_ways: u32,
    /// Load latency on a cache hit. [E]
    pub cache_hit_ns: f64,
    /// Cost of a store to a cached line. [E]
    pub store_ns: f64,
    /// Cost of a store to a line not in the cache (fill-buffer occupancy). [E]
    pub store_miss_ns: f64,
    /// Read-for-ownership latency: a write-back of a store-missed line cannot leave before. [E]
    pub rfo_ns: f64,
    /// Issue cost of clwb, clflushopt and clflush. [E]
    pub flush_ns: f64,
    /// Issue cost of non-temporal stores per full 64 B line (write-combining fill). [E]
    pub ntstore_ns: f64,
    /// Cost of sfence once the write-backs it waits for are accepted. [E]
    pub fence_ns: f64,
    /// Fence cadence (mechanism 6): after a fence that drained non-temporal lines, the CPU's
    /// next non-temporal line leaves the core no earlier than this after the fence completed
    /// (the drain's acknowledgement returns to the core before its write-combining buffers are
    /// reused; stores keep issuing meanwhile). An idle gap between persists hides it, so idle
    /// persist latencies do not change; back-to-back fenced ntstores pay it once per fence.
    /// Source: 13-sfence_interval.csv, one thread, ntstore with an sfence after every 64 B:
    /// 0.3375 GB/s, 190 ns per fence, where the same 64 B persist from idle takes 125 ns
    /// (12-flush_instr_lat.csv): 190 = wc_fence_ns + ntstore_accept_ns (90) + fence_ns (5).
    /// 0 disables.
    pub wc_fence_ns: f64,
    /// Cost of mfence once the write-backs it waits for are accepted. [E]
    pub mfence_ns: f64,
    /// Cost of a locked read-modify-write on top of its load and store. [E]
    pub locked_ns: f64,
    /// Memory-level parallelism per CPU: line fill buffers shared by loads, write-backs and
    /// write-combining lines. [E: the 12 L1D fill buffers of Skylake/Cascade Lake]
    pub mlp: u32,
}

impl Default for MediaParams {
    fn default() -> Self {
        Self::optane_like()
    }
}

impl MediaParams {
    /// `optane-like`: one Intel Optane DC PMM 100 per channel, six channels interleaved.
    pub fn optane_like() -> Self {
        MediaParams {
            preset: "optane-like".into(),
            unit: 256,
            read_hit_ns: 170.0,
            read_miss_ns: 305.0,
            clwb_accept_ns: 62.0,
            ntstore_accept_ns: 90.0,
            read_service_ns: 39.0,
            write_service_ns: 116.0,
            wc_buffer: 16 * 1024,
            wpq_depth: 4,
            interleave: 4096,
            ways: 6,
            contention_writers: 4.0,
            contention_exponent: 0.6,
            contention_window_ns: 10_000.0,
            contention_scope: 1,
            tail_probability: 1e-5,
            tail_ns: 50_000.0,
            tail_hot_set: 32 * 1024,
            read_contention_readers: 4.0,
            read_contention_exponent: 0.285,
            rw_interference: 1.0,
            rfo_media: 1,
            sockets: 1,
            pmem_socket: 0,
            remote_latency_ns: 70.0,
            remote_read_factor: 0.9,
            remote_write_factor: 0.4,
            remote_mixed_factor: 0.25,
            persist: PersistDomain::Adr,
            poison_consume: 64,
            poison_clear: 256,
            poison_badblocks: 512,
            poison_signal: 4096,
            vendor: CpuVendor::Intel,
            cache: 32 << 20,
            cache_ways: 16,
            cache_hit_ns: 5.0,
            store_ns: 1.0,
            store_miss_ns: 24.0,
            rfo_ns: 54.0,
            flush_ns: 2.0,
            ntstore_ns: 22.0,
            fence_ns: 5.0,
            wc_fence_ns: 95.0,
            mfence_ns: 8.0,
            locked_ns: 20.0,
            mlp: 12,
        }
    }

    /// `cxl-like`: a CXL Type-3 persistent-memory device on PCIe5 x8 (section 7, column 2).
    pub fn cxl_like() -> Self {
        MediaParams {
            preset: "cxl-like".into(),
            unit: 64,
            read_hit_ns: 250.0,
            read_miss_ns: 250.0,
            clwb_accept_ns: 250.0,
            ntstore_accept_ns: 250.0,
            // 64 B at about 25 GB/s per direction.
            read_service_ns: 2.56,
            write_service_ns: 2.56,
            wc_buffer: 0,
            wpq_depth: 32,
            interleave: 4096,
            ways: 1,
            contention_exponent: 0.0,
            contention_scope: 1,
            read_contention_exponent: 0.0,
            // The write-combining drain's acknowledgement crosses the link: one accept round
            // trip, as on optane-like (95 ns against its 90 ns acceptance). [E]
            wc_fence_ns: 250.0,
            // PCIe links are full duplex: reads and writes do not share a pipeline. [E]
            rw_interference: 0.0,
            tail_probability: 0.0,
            remote_latency_ns: 80.0,
            remote_read_factor: 1.0,
            remote_write_factor: 1.0,
            remote_mixed_factor: 1.0,
            poison_clear: 64,
            ..Self::optane_like()
        }
    }

    /// `dram`: the DRAM reference column (DDR4-2666, six channels).
    pub fn dram() -> Self {
        MediaParams {
            preset: "dram".into(),
            unit: 64,
            read_hit_ns: 81.0,
            read_miss_ns: 101.0,
            clwb_accept_ns: 57.0,
            ntstore_accept_ns: 87.0,
            // 64 B per 3 ns: about 21 GB/s per DDR4-2666 channel. [E]
            read_service_ns: 3.0,
            write_service_ns: 3.0,
            wc_buffer: 0,
            wpq_depth: 32,
            contention_exponent: 0.0,
            contention_scope: 1,
            read_contention_exponent: 0.0,
            // The drain's acknowledgement from the memory controller: one accept round trip,
            // as on optane-like. [E]
            wc_fence_ns: 87.0,
            // DRAM has read/write bus turnarounds, not modelled here. [E]
            rw_interference: 0.0,
            tail_probability: 0.0,
            remote_latency_ns: 0.0,
            remote_read_factor: 1.0,
            remote_write_factor: 1.0,
            remote_mixed_factor: 1.0,
            poison_clear: 64,
            ..Self::optane_like()
        }
    }

    /// The preset of that name, or an error listing the presets.
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "optane-like" => Ok(Self::optane_like()),
            "cxl-like" => Ok(Self::cxl_like()),
            "dram" => Ok(Self::dram()),
            _ => Err(format!(
                "unknown media preset `{name}`; presets: {}",
                PRESETS.join(", ")
            )),
        }
    }

    /// Sets one parameter by name from its text form (`62`, `62ns`, `1.5us`, `16KiB`, `0x100`,
    /// `adr`). An unknown key is an error listing the valid keys. The combination is checked by
    /// [`MediaParams::validate`], which `Machine::new` calls.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self.set_field(key, value) {
            Some(r) => r.map_err(|e| format!("media parameter `{key}`: {e}")),
            None => Err(format!(
                "unknown media parameter `{key}`; valid keys: {}",
                Self::keys().join(", ")
            )),
        }
    }

    /// The value of one parameter in the text form `set` accepts.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_field(key)
    }

    /// Every key with its value, in declaration order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        PARAM_KEYS
            .iter()
            .filter_map(|(k, _)| self.get_field(k).map(|v| (*k, v)))
            .collect()
    }

    /// Every key `set` accepts.
    pub fn keys() -> Vec<&'static str> {
        PARAM_KEYS.iter().map(|(k, _)| *k).collect()
    }

    /// One-line descriptions of the keys.
    pub fn key_docs() -> &'static [(&'static str, &'static str)] {
        PARAM_KEYS
    }

    /// Checks that the parameters describe a machine the model can run.
    pub fn validate(&self) -> Result<(), String> {
        let pow2 = |name: &str, v: u64, min: u64| {
            if v < min || !v.is_power_of_two() {
                Err(format!("{name} must be a power of two >= {min}, not {v}"))
            } else {
                Ok(())
            }
        };
        pow2("unit", self.unit, 64)?;
        if self.unit > 4096 {
            return Err(format!("unit must be at most 4096, not {}", self.unit));
        }
        pow2("interleave", self.interleave, self.unit)?;
        if !self.wc_buffer.is_multiple_of(self.unit) {
            return Err("wc_buffer must be a multiple of unit".into());
        }
        if self.ways == 0 || self.wpq_depth == 0 || self.mlp == 0 || self.sockets == 0 {
            return Err("ways, wpq_depth, mlp and sockets must be at least 1".into());
        }
        pow2("poison_consume", self.poison_consume, 64)?;
        pow2("poison_clear", self.poison_clear, self.poison_consume)?;
        pow2("poison_badblocks", self.poison_badblocks, 1)?;
        pow2("poison_signal", self.poison_signal, self.poison_clear)?;
        if self.cache != 0 {
            let set_bytes = 64 * u64::from(self.cache_ways);
            if self.cache_ways == 0
                || !self.cache.is_multiple_of(set_bytes)
                || !(self.cache / set_bytes).is_power_of_two()
            {
                return Err("cache must be cache_ways x 64 B x a power-of-two set count".into());
            }
        }
        let times = [
            self.read_hit_ns,
            self.read_miss_ns,
            self.clwb_accept_ns,
            self.ntstore_accept_ns,
            self.read_service_ns,
            self.write_service_ns,
            self.contention_window_ns,
            self.tail_ns,
            self.remote_latency_ns,
            self.cache_hit_ns,
            self.store_ns,
            self.store_miss_ns,
            self.rfo_ns,
            self.flush_ns,
            self.ntstore_ns,
            self.fence_ns,
            self.wc_fence_ns,
            self.mfence_ns,
            self.locked_ns,
        ];
        if times.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return Err("times must be finite and not negative".into());
        }
        if self.read_miss_ns < self.read_hit_ns {
            return Err("read_miss_ns must not be below read_hit_ns".into());
        }
        let factors = [
            self.remote_read_factor,
            self.remote_write_factor,
            self.remote_mixed_factor,
        ];
        if factors.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err("remote factors must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.rw_interference) {
            return Err("rw_interference must be in [0, 1]".into());
        }
        if self.read_contention_readers <= 0.0 || self.read_contention_exponent < 0.0 {
            return Err(
                "read_contention_readers must be > 0 and read_contention_exponent >= 0".into(),
            );
        }
        if self.contention_scope > 2 {
            return Err(format!(
                "contention_scope must be 0, 1 or 2, not {}",
                self.contention_scope
            ));
        }
        if self.rfo_media > 1 {
            return Err(format!("rfo_media must be 0 or 1, not {}", self.rfo_media));
        }
        if self.pmem_socket > self.sockets {
            return Err(format!(
                "pmem_socket must be at most sockets ({}), not {}",
                self.sockets, self.pmem_socket
            ));
        }
        if !(0.0..=1.0).contains(&self.tail_probability) {
            return Err("tail_probability must be in [0, 1]".into());
        }
        let contention_ok = self.contention_writers > 0.0 && self.contention_exponent >= 0.0;
        if !contention_ok {
            return Err("contention_writers must be > 0 and contention_exponent >= 0".into());
        }
        Ok(())
    }

    /// Peak media bandwidth of one DIMM, read and write, in GB/s (derived, not a parameter).
    pub fn peak_per_dimm_gbps(&self) -> (f64, f64) {
        let u = self.unit as f64;
        (u / self.read_service_ns, u / self.write_service_ns)
    }
}

/// Declares the keys once: `set_field`, `get_field` and the key table come from this list.
macro_rules! param_table {
    ($($key:literal => $field:ident : $kind:ident, $doc:literal;)*) => {
        const PARAM_KEYS: &[(&str, &str)] = &[$(($key, $doc)),*];

        impl MediaParams {
            fn set_field(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
                match key {
                    $($key => Some(parse::$kind(value).map(|v| self.$field = v)),)*
                    _ => None,
                }
            }

            fn get_field(&self, key: &str) -> Option<String> {
                match key {
                    $($key => Some(show::$kind(&self.$field)),)*
                    _ => None,
                }
            }
        }
    };
}

param_table! {
    "unit" => unit: bytes, "media access unit";
    "read_hit_ns" => read_hit_ns: ns, "load latency, unit in the DIMM buffer";
    "read_miss_ns" => read_miss_ns: ns, "load latency, unit read from the media";
    "clwb_accept_ns" => clwb_accept_ns: ns, "write-back to persistence-domain acceptance";
    "ntstore_accept_ns" => ntstore_accept_ns: ns, "WC line to persistence-domain acceptance";
    "read_service_ns" => read_service_ns: ns, "media read occupancy per unit";
    "write_service_ns" => write_service_ns: ns, "media write occupancy per unit";
    "wc_buffer" => wc_buffer: bytes, "on-DIMM write-combining buffer (0 = none)";
    "wpq_depth" => wpq_depth: count, "write-pending-queue entries per channel";
    "interleave" => interleave: bytes, "interleave granularity";
    "ways" => ways: count, "interleaved DIMMs";
    "contention_writers" => contention_writers: real, "writers per DIMM before contention";
    "contention_exponent" => contention_exponent: real, "contention exponent (0 = off)";
    "contention_window_ns" => contention_window_ns: ns, "window that counts a writer";
    "contention_scope" => contention_scope: count, "write contention scope: 0 window, 1 share, 2 distinct";
    "tail_probability" => tail_probability: real, "tail-event probability per hot write";
    "tail_ns" => tail_ns: ns, "tail-event latency";
    "tail_hot_set" => tail_hot_set: bytes, "hot set size for tail events";
    "read_contention_readers" => read_contention_readers: real, "readers per DIMM before read contention";
    "read_contention_exponent" => read_contention_exponent: real, "read contention exponent (0 = off)";
    "rw_interference" => rw_interference: real, "media read/write interference, 0 to 1";
    "rfo_media" => rfo_media: count, "store-miss RFO reads the media: 0 or 1";
    "sockets" => sockets: count, "sockets the CPUs are spread over";
    "pmem_socket" => pmem_socket: count, "socket of the pmem (= sockets: all CPUs remote)";
    "remote_latency_ns" => remote_latency_ns: ns, "extra latency of a remote access";
    "remote_read_factor" => remote_read_factor: real, "remote read bandwidth factor";
    "remote_write_factor" => remote_write_factor: real, "remote write bandwidth factor";
    "remote_mixed_factor" => remote_mixed_factor: real, "remote mixed-traffic bandwidth factor";
    "persist" => persist: persist, "persistence domain: adr or eadr";
    "poison_consume" => poison_consume: bytes, "poison unit a load consumes";
    "poison_clear" => poison_clear: bytes, "poison clear (ECC) unit";
    "poison_badblocks" => poison_badblocks: bytes, "badblocks sector";
    "poison_signal" => poison_signal: bytes, "memory_failure / SIGBUS unit";
    "vendor" => vendor: vendor, "CPU vendor: intel or amd";
    "cache" => cache: bytes, "last-level cache size (0 = none)";
    "cache_ways" => cache_ways: count, "last-level cache associativity";
    "cache_hit_ns" => cache_hit_ns: ns, "cache-hit load latency";
    "store_ns" => store_ns: ns, "store to a cached line";
    "store_miss_ns" => store_miss_ns: ns, "store to an uncached line";
    "rfo_ns" => rfo_ns: ns, "read-for-ownership latency";
    "flush_ns" => flush_ns: ns, "clwb/clflushopt/clflush issue cost";
    "ntstore_ns" => ntstore_ns: ns, "non-temporal store issue cost per line";
    "fence_ns" => fence_ns: ns, "sfence cost";
    "wc_fence_ns" => wc_fence_ns: ns, "next ntstore line after a draining fence waits this";
    "mfence_ns" => mfence_ns: ns, "mfence cost";
    "locked_ns" => locked_ns: ns, "locked read-modify-write cost";
    "mlp" => mlp: count, "line fill buffers per CPU";
}

/// Text to value for each kind of parameter.
pub(crate) mod parse {
    use super::{CpuVendor, PersistDomain};

    fn number(s: &str) -> Result<f64, String> {
        let v = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).map(|v| v as f64).ok()
        } else {
            s.parse::<f64>().ok()
        };
        match v {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(format!("`{s}` is not a number")),
        }
    }

    fn split_suffix<'a>(s: &'a str, suffixes: &[(&str, f64)]) -> (&'a str, f64) {
        for (suffix, mult) in suffixes {
            if let Some(head) = s.strip_suffix(suffix) {
                return (head, *mult);
            }
        }
        (s, 1.0)
    }

    /// A duration in nanoseconds: `62`, `62ns`, `1.5us`, `2ms`, `1s`.
    pub fn ns(s: &str) -> Result<f64, String> {
        let (head, mult) = split_suffix(
            s.trim(),
            &[("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)],
        );
        let v = number(head)? * mult;
        if v < 0.0 {
            return Err(format!("`{s}` is negative"));
        }
        Ok(v)
    }

    /// A size in bytes: `256`, `0x100`, `4K`, `16KiB`, `32M`, `1GiB`.
    pub fn bytes(s: &str) -> Result<u64, String> {
        let (head, mult) = split_suffix(
            s.trim(),
            &[
                ("KiB", 1024.0),
                ("MiB", 1048576.0),
                ("GiB", 1073741824.0),
                ("K", 1024.0),
                ("M", 1048576.0),
                ("G", 1073741824.0),
                ("B", 1.0),
            ],
        );
        let v = number(head)? * mult;
        if v < 0.0 || v.fract() != 0.0 || v > u64::MAX as f64 {
            return Err(format!("`{s}` is not a whole number of bytes"));
        }
        Ok(v as u64)
    }

    pub fn count(s: &str) -> Result<u32, String> {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}` is not a count"))
    }

    pub fn real(s: &str) -> Result<f64, String> {
        number(s.trim())
    }

    pub fn persist(s: &str) -> Result<PersistDomain, String> {
        match s.trim() {
            "adr" => Ok(PersistDomain::Adr),
            "eadr" => Ok(PersistDomain::Eadr),
            _ => Err(format!("`{s}` is not a persistence domain (adr, eadr)")),
        }
    }

    pub fn vendor(s: &str) -> Result<CpuVendor, String> {
        match s.trim() {
            "intel" => Ok(CpuVendor::Intel),
            "amd" => Ok(CpuVendor::Amd),
            _ => Err(format!("`{s}` is not a CPU vendor (intel, amd)")),
        }
    }
}

/// Value to text, in a form `parse` reads back.
mod show {
    use super::{CpuVendor, PersistDomain};

    pub fn ns(v: &f64) -> String {
        format!("{v}ns")
    }
    pub fn bytes(v: &u64) -> String {
        v.to_string()
    }
    pub fn count(v: &u32) -> String {
        v.to_string()
    }
    pub fn real(v: &f64) -> String {
        v.to_string()
    }
    pub fn persist(v: &PersistDomain) -> String {
        v.to_string()
    }
    pub fn vendor(v: &CpuVendor) -> String {
        match v {
            CpuVendor::Intel => "intel".into(),
            CpuVendor::Amd => "amd".into(),
        }
    }
}

impl fmt::Display for PersistDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PersistDomain::Adr => "adr",
            PersistDomain::Eadr => "eadr",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_unknown_names_list_choices() {
        for name in PRESETS {
            let p = MediaParams::preset(name).expect("preset exists");
            p.validate().expect("preset is valid");
        }
        let err = MediaParams::preset("nvme").unwrap_err();
        assert!(err.contains("optane-like") && err.contains("cxl-like") && err.contains("dram"));
    }

    #[test]
    fn set_parses_units_and_rejects_unknown_keys() {
        let mut p = MediaParams::optane_like();
        p.set("wc_buffer", "32KiB").unwrap();
        assert_eq!(p.wc_buffer, 32 * 1024);
        p.set("tail_ns", "20us").unwrap();
        assert_eq!(p.tail_ns, 20_000.0);
        p.set("persist", "eadr").unwrap();
        assert_eq!(p.persist, PersistDomain::Eadr);
        p.set("interleave", "0x2000").unwrap();
        assert_eq!(p.interleave, 0x2000);
        assert!(p.set("ways", "six").is_err());
        let err = p.set("bogus", "1").unwrap_err();
        assert!(err.contains("valid keys") && err.contains("write_service_ns"));
        // Every key round-trips through its text form.
        let q = MediaParams::cxl_like();
        let mut r = MediaParams::dram();
        for (k, v) in q.entries() {
            r.set(k, &v).unwrap();
        }
        r.preset = q.preset.clone();
        assert_eq!(q, r);
    }

    #[test]
    fn validate_rejects_bad_geometry() {
        let mut p = MediaParams::optane_like();
        p.unit = 96;
        assert!(p.validate().is_err());
        let mut p = MediaParams::optane_like();
        p.poison_clear = 32;
        assert!(p.validate().is_err());
    }
}
