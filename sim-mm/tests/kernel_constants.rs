//! Every kernel constant and encoding sim-mm mirrors, against the value in the kernel header
//! that defines it (x86-64, Linux 6.x). The expected values are written here by hand from the
//! headers named in each table; the model's constants must match them bit for bit, so that an
//! ftrace value or a kernel patch reads the same way in pmsim.

use sim_mm::dax_entry::*;
use sim_mm::memory_failure::*;
use sim_mm::mm::VmFault;
use sim_mm::page::{PAGE_WAIT_TABLE_SIZE, PG_LOCKED};
use sim_mm::pgtable::*;
use sim_mm::signal::{PF_MCE_EARLY, PF_MCE_PROCESS, SiCode, Signal};
use sim_mm::xarray::*;

fn check(table: &str, rows: &[(&str, u64, u64)]) {
    let bad: Vec<String> = rows
        .iter()
        .filter(|(_, ours, kernel)| ours != kernel)
        .map(|(name, ours, kernel)| format!("{name}: pmsim {ours:#x}, kernel {kernel:#x}"))
        .collect();
    assert!(bad.is_empty(), "{table}:\n{}", bad.join("\n"));
}

#[test]
fn vm_fault_codes_match_mm_types_h() {
    // include/linux/mm_types.h, enum vm_fault_reason and VM_FAULT_ERROR.
    check(
        "VM_FAULT",
        &[
            ("VM_FAULT_OOM", VmFault::OOM.0.into(), 0x000001),
            ("VM_FAULT_SIGBUS", VmFault::SIGBUS.0.into(), 0x000002),
            ("VM_FAULT_MAJOR", VmFault::MAJOR.0.into(), 0x000004),
            ("VM_FAULT_HWPOISON", VmFault::HWPOISON.0.into(), 0x000010),
            (
                "VM_FAULT_HWPOISON_LARGE",
                VmFault::HWPOISON_LARGE.0.into(),
                0x000020,
            ),
            ("VM_FAULT_SIGSEGV", VmFault::SIGSEGV.0.into(), 0x000040),
            ("VM_FAULT_NOPAGE", VmFault::NOPAGE.0.into(), 0x000100),
            ("VM_FAULT_LOCKED", VmFault::LOCKED.0.into(), 0x000200),
            ("VM_FAULT_RETRY", VmFault::RETRY.0.into(), 0x000400),
            ("VM_FAULT_FALLBACK", VmFault::FALLBACK.0.into(), 0x000800),
            ("VM_FAULT_DONE_COW", VmFault::DONE_COW.0.into(), 0x001000),
            ("VM_FAULT_NEEDDSYNC", VmFault::NEEDDSYNC.0.into(), 0x002000),
            ("VM_FAULT_COMPLETED", VmFault::COMPLETED.0.into(), 0x004000),
            // OOM | SIGBUS | SIGSEGV | HWPOISON | HWPOISON_LARGE | FALLBACK
            ("VM_FAULT_ERROR", VmFault::ERROR.0.into(), 0x000873),
        ],
    );
    // GUP relies on FALLBACK being an error (faultin_page).
    assert!(VmFault::FALLBACK.is_error());
    assert!(!VmFault::NOPAGE.is_error() && !VmFault::NEEDDSYNC.is_error());
}

#[test]
fn dax_entry_encoding_matches_fs_dax_c() {
    // fs/dax.c: DAX_SHIFT, the flag bits, PG_PMD_COLOUR/PG_PMD_NR; x86-64 page and PMD sizes.
    check(
        "DAX entry",
        &[
            ("DAX_SHIFT", DAX_SHIFT.into(), 4),
            ("DAX_LOCKED", DAX_LOCKED, 1 << 0),
            ("DAX_PMD", DAX_PMD, 1 << 1),
            ("DAX_ZERO_PAGE", DAX_ZERO_PAGE, 1 << 2),
            ("DAX_EMPTY", DAX_EMPTY, 1 << 3),
            ("PAGE_SHIFT", PAGE_SHIFT.into(), 12),
            ("PMD_SHIFT", PMD_SHIFT.into(), 21),
            ("PMD_ORDER", PMD_ORDER.into(), 9),
            ("PG_PMD_NR", PG_PMD_NR, 512),
            ("PG_PMD_COLOUR", PG_PMD_COLOUR, 511),
            // dax_make_entry(pfn, flags) = xa_mk_value(flags | pfn << DAX_SHIFT)
            (
                "dax_make_entry(0x123, PMD|LOCKED)",
                dax_make_entry(0x123, DAX_PMD | DAX_LOCKED).0,
                ((0x123 << 4) | 0b11) << 1 | 1,
            ),
        ],
    );
}

#[test]
fn xarray_internals_match_xarray_h() {
    // include/linux/xarray.h: value and internal entries, the retry and zero entries, marks,
    // and the page-cache tags of include/linux/fs.h.
    check(
        "xarray",
        &[
            ("xa_mk_value(5)", xa_mk_value(5).0, (5 << 1) | 1),
            ("xa_mk_internal(7)", xa_mk_internal(7).0, (7 << 2) | 2),
            ("XA_RETRY_ENTRY", XA_RETRY_ENTRY.0, (256 << 2) | 2),
            ("XA_ZERO_ENTRY", XA_ZERO_ENTRY.0, (257 << 2) | 2),
            ("XA_MARK_0", u64::from(XA_MARK_0.0), 0),
            ("XA_MARK_1", u64::from(XA_MARK_1.0), 1),
            ("XA_MARK_2", u64::from(XA_MARK_2.0), 2),
            ("PAGECACHE_TAG_DIRTY", u64::from(PAGECACHE_TAG_DIRTY.0), 0),
            (
                "PAGECACHE_TAG_WRITEBACK",
                u64::from(PAGECACHE_TAG_WRITEBACK.0),
                1,
            ),
            (
                "PAGECACHE_TAG_TOWRITE",
                u64::from(PAGECACHE_TAG_TOWRITE.0),
                2,
            ),
        ],
    );
    // xa_is_node: an internal entry above 4096; retry and zero entries are not nodes.
    assert!(XA_NODE_ENTRY.is_node() && XA_NODE_ENTRY.is_internal());
    assert!(!XA_RETRY_ENTRY.is_node() && !XA_ZERO_ENTRY.is_node());
    assert!(xa_mk_value(0).is_value() && !xa_mk_value(0).is_internal());
}

#[test]
fn page_table_bits_match_pgtable_types_h() {
    // arch/x86/include/asm/pgtable_types.h: _PAGE_BIT_PRESENT 0, RW 1, USER 2, ACCESSED 5,
    // DIRTY 6, PSE 7, SPECIAL = SOFTW1 = 9, DEVMAP = SOFTW4 = 58.
    check(
        "x86 page-table bits",
        &[
            ("_PAGE_PRESENT", _PAGE_PRESENT, 1 << 0),
            ("_PAGE_RW", _PAGE_RW, 1 << 1),
            ("_PAGE_USER", _PAGE_USER, 1 << 2),
            ("_PAGE_ACCESSED", _PAGE_ACCESSED, 1 << 5),
            ("_PAGE_DIRTY", _PAGE_DIRTY, 1 << 6),
            ("_PAGE_PSE", _PAGE_PSE, 1 << 7),
            ("_PAGE_SPECIAL", _PAGE_SPECIAL, 1 << 9),
            ("_PAGE_DEVMAP", _PAGE_DEVMAP, 1 << 58),
        ],
    );
}

#[test]
fn page_flags_signals_and_memory_failure_flags_match_the_kernel() {
    // include/linux/page-flags.h: PG_locked is bit 0. (PG_hwpoison's bit number depends on the
    // kernel configuration; the model's bit is its own and is not compared.)
    // include/linux/pagemap.h: PAGE_WAIT_TABLE_BITS 8.
    // include/linux/sched.h: PF_MCE_PROCESS, PF_MCE_EARLY.
    // include/linux/mm.h: enum mf_flags.
    // include/uapi/asm-generic/siginfo.h: BUS_MCEERR_AR 4, BUS_MCEERR_AO 5, BUS_ADRERR 2,
    // SEGV_MAPERR 1, SI_KERNEL 0x80. arch/x86/include/uapi/asm/signal.h: SIGBUS 7,
    // SIGKILL 9, SIGSEGV 11.
    check(
        "flags",
        &[
            ("PG_locked", PG_LOCKED.into(), 1 << 0),
            ("PAGE_WAIT_TABLE_SIZE", PAGE_WAIT_TABLE_SIZE as u64, 1 << 8),
            ("PF_MCE_PROCESS", PF_MCE_PROCESS.into(), 0x0000_0080),
            ("PF_MCE_EARLY", PF_MCE_EARLY.into(), 0x0800_0000),
            ("MF_COUNT_INCREASED", MF_COUNT_INCREASED.into(), 1 << 0),
            ("MF_ACTION_REQUIRED", MF_ACTION_REQUIRED.into(), 1 << 1),
            ("MF_MUST_KILL", MF_MUST_KILL.into(), 1 << 2),
            ("MF_SOFT_OFFLINE", MF_SOFT_OFFLINE.into(), 1 << 3),
            ("MF_UNPOISON", MF_UNPOISON.into(), 1 << 4),
            ("MF_SW_SIMULATED", MF_SW_SIMULATED.into(), 1 << 5),
            ("MF_NO_RETRY", MF_NO_RETRY.into(), 1 << 6),
            ("MF_MEM_PRE_REMOVE", MF_MEM_PRE_REMOVE.into(), 1 << 7),
            ("BUS_MCEERR_AR", SiCode::BusMceerrAr as u64, 4),
            ("BUS_MCEERR_AO", SiCode::BusMceerrAo as u64, 5),
            ("BUS_ADRERR", SiCode::BusAdrerr as u64, 2),
            ("SEGV_MAPERR", SiCode::SegvMaperr as u64, 1),
            ("SI_KERNEL", SiCode::Kernel as u64, 0x80),
            ("SIGBUS", Signal::SIGBUS as u64, 7),
            ("SIGKILL", Signal::SIGKILL as u64, 9),
            ("SIGSEGV", Signal::SIGSEGV as u64, 11),
        ],
    );
}
