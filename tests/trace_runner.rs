//! End-to-end tests of the trace runner (`sim_fs::runner`) through the `pmsim` binary: the 2019
//! PMD missed wakeup found and replayed, the fixed kernel clean under dfs, expectations (data,
//! sigbus, pte/pmd) met and unmet, the shipped traces under traces/dax, and positioned refusals.

use std::path::PathBuf;

mod common;
use common::{pmsim, root};

/// A scratch trace file under the target directory.
fn scratch(name: &str, text: &str) -> String {
    common::scratch_in("trace_runner", name, text)
}

fn shipped(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// `pmsim explore PATH --strategy dfs --preemption-bound BOUND EXTRA...` is clean (exit 0)
/// and exhausted its bounded space; returns the output.
fn assert_dfs_clean_exhausted(path: &str, bound: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "explore",
        path,
        "--strategy",
        "dfs",
        "--preemption-bound",
        bound,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = pmsim(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("exhausted the search space"), "{out}");
    out
}

#[test]
fn explore_finds_the_pmd_missed_wakeup_and_its_replay_command_reproduces_it() {
    let (code, out, err) = pmsim(&["explore", "traces/format/pmd_missed_wakeup.trace"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("VIOLATION lost-wakeup"), "{out}");
    // t2 sleeps in its PMD fault (line 8) on the PMD-aligned key {xa, 0}.
    assert!(out.contains("at trace line 8"), "{out}");
    assert!(out.contains("t2 [asleep] line 8"), "{out}");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay:   pmsim "))
        .expect("a replay command");
    let sched = replay
        .split('\'')
        .nth(1)
        .expect("the schedule in quotes")
        .to_string();
    let (code2, out2, err2) = pmsim(&[
        "replay",
        "traces/format/pmd_missed_wakeup.trace",
        "--schedule",
        &sched,
    ]);
    assert_eq!(code2, 1, "{out2}{err2}");
    assert!(out2.contains("VIOLATION lost-wakeup"), "{out2}");
    assert!(out2.contains("t2 [asleep] line 8"), "{out2}");
}

#[test]
fn without_the_bug_line_dfs_at_preemption_bound_2_is_clean() {
    let text: String = shipped("traces/format/pmd_missed_wakeup.trace")
        .lines()
        .filter(|l| !l.starts_with("bug "))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = scratch("pmd_fixed.trace", &text);
    let out = assert_dfs_clean_exhausted(&t, "2", &[]);
    let runs: u64 = out
        .lines()
        .next()
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|w| w.strip_suffix(" runs"))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    eprintln!("dfs bound 2 on the fixed kernel: {out}");
    assert!(runs > 100, "the search ran few schedules: {out}");
}

#[test]
fn every_trace_under_traces_dax_runs_clean() {
    let n = all_clean("traces/dax");
    assert!(n >= 5, "{n} traces");
}

/// A trace with one statement changed must fail (`FROM` -> `TO`) with `want` in the report.
fn mutated_fails(path: &str, from: &str, to: &str, want: &str) {
    let text = shipped(path);
    assert!(text.contains(from), "{path} has `{from}`");
    let t = scratch(
        &format!("{}.mut.trace", path.replace('/', "_")),
        &text.replacen(from, to, 1),
    );
    let (code, out, err) = pmsim(&["explore", &t, "--runs", "30"]);
    assert_eq!(code, 1, "{path} with `{to}`: {out}{err}");
    assert!(out.contains(want), "{want} in {out}");
}

#[test]
fn unmet_expectations_are_violations_naming_thread_line_and_both_sides() {
    // Data: p2 expects the old fill only, but p1's store may come first.
    mutated_fails(
        "traces/dax/two_procs_share.trace",
        "=> 0x33|0x5a",
        "=> 0x33",
        "thread p2, line 12: `p2 load b+0 8 => 0x33` expected 0x33, got ok, 8 bytes of 0x5a",
    );
    // SIGBUS past EOF, expected to succeed.
    mutated_fails(
        "traces/dax/sigbus_past_eof.trace",
        "m+0x4000 4 => sigbus",
        "m+0x4000 4 => 0x01",
        "expected 0x01, got sigbus",
    );
    // A load inside the file expected to take SIGBUS.
    mutated_fails(
        "traces/dax/sigbus_past_eof.trace",
        "m+0x1000 4 => 0x01",
        "m+0x1000 4 => sigbus",
        "expected sigbus, got ok, 4 bytes of 0x01",
    );
    // Mapping sizes both ways.
    mutated_fails(
        "traces/dax/pmd_and_pte.trace",
        "big+0x1000 8 => pmd",
        "big+0x1000 8 => pte",
        "expected pte, got ok, 8 bytes of 0x7e, pmd",
    );
    mutated_fails(
        "traces/dax/pmd_and_pte.trace",
        "small+0x300000 read => pte",
        "small+0x300000 read => pmd",
        "expected pmd, got ok, pte",
    );
    // Wrong data after a store; wrong size; wrong errno.
    mutated_fails(
        "traces/dax/map_sync_store_flush.trace",
        "8 => u64:0x1122334455667788",
        "8 => u64:0x1122334455667789",
        "expected u64:0x1122334455667789",
    );
    mutated_fails(
        "traces/dax/map_sync_store_flush.trace",
        "=> size=64K",
        "=> size=32K",
        "expected size=32KiB, got ok, size=65536",
    );
    mutated_fails(
        "traces/dax/create_and_fault_hole.trace",
        "=> err(EEXIST)",
        "=> err(ENOENT)",
        "expected err(ENOENT), got err(EEXIST)",
    );
}

#[test]
fn what_cannot_run_is_refused_with_positions_and_nothing_runs() {
    let t = scratch(
        "refused.trace",
        "pmsim-trace 1\n\
         file /f size=8K\n\
         t1 mmap /f 0 8K shared as m\n\
         t1 load m+0x1ff8 16\n\
         t1 write /nope 0 8 0x01\n\
         t1 stat /nope\n\
         t1 poison pmem:0x20000000 notify\n",
    );
    let (code, out, err) = pmsim(&["run", &t]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "nothing ran: {out}");
    for want in [
        "refused.trace:4:1: `t1 load m+0x1ff8`: the range 0x1ff8..0x2008 passes the end of mapping `m`",
        "refused.trace:5:1: `t1 write /nope`: no such file",
        "refused.trace:6:1: `t1 stat /nope`: no such file",
        "refused.trace:7:1: `t1 poison pmem:0x20000000`: the range 0x20000000..0x20000001 passes the end of the pmem",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    // Files that do not fit the file system.
    let t = scratch(
        "too_big.trace",
        "pmsim-trace 1\nmachine pmem=16MiB\nfile /f size=32MiB\nt1 yield\n",
    );
    let (code, out, err) = pmsim(&["run", &t]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("too_big.trace:3:1: `file /f`"), "{err}");
}

/// Every `.trace` under `dir` starts with a comment and runs clean under `run`, a short
/// `explore` and `run --check-invariants`; returns how many there are.
fn all_clean(dir: &str) -> usize {
    let mut n = 0;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with('#'),
            "{}: starts with a comment",
            p.display()
        );
        let ps = p.display().to_string();
        for args in [
            vec!["run", ps.as_str()],
            vec!["explore", ps.as_str(), "--runs", "15"],
            vec!["run", ps.as_str(), "--check-invariants"],
        ] {
            let (code, out, err) = pmsim(&args);
            assert_eq!(code, 0, "{args:?}: {out}{err}");
        }
        n += 1;
    }
    n
}

#[test]
fn every_trace_under_traces_fs_runs_clean() {
    let n = all_clean("traces/fs");
    assert!(n >= 8, "{n} traces");
}

#[test]
fn no_mmaplock_maps_a_freed_block_and_without_it_dfs_at_bound_2_is_clean() {
    let path = "traces/bugs/no-mmaplock.trace";
    let (code, out, err) = pmsim(&["explore", path]);
    assert_eq!(code, 1, "{out}{err}");
    // The general use-after-free checks of the mm layer name the freed block: freeing a
    // mapped page (set_block_free) or a page table mapping a free block (the invariants).
    assert!(
        out.contains("VIOLATION assertion:block-freed-while-busy")
            || out.contains("mapped-after-free"),
        "{out}"
    );
    assert!(
        out.contains("t2") && out.contains("xfs_setattr_size"),
        "{out}"
    );
    let text: String = shipped(path)
        .lines()
        .filter(|l| !l.starts_with("bug "))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = scratch("no_mmaplock_fixed.trace", &text);
    assert_dfs_clean_exhausted(&t, "2", &[]);
}

#[test]
fn file_statements_meet_or_miss_their_expectations() {
    // read(2) after collapse: the tail moved down.
    mutated_fails(
        "traces/fs/fallocate_modes.trace",
        "t1 read /f 4K 8 => 0x03",
        "t1 read /f 4K 8 => 0x02",
        "expected 0x02, got ok, 8 bytes of 0x03",
    );
    // A full file system: the write fails with ENOSPC.
    mutated_fails(
        "traces/fs/enospc.trace",
        "t1 write /big 0 4MiB 0x5a => err(ENOSPC)",
        "t1 write /big 0 4MiB 0x5a",
        "expected success, got err(ENOSPC)",
    );
    // msync at an unaligned offset.
    mutated_fails(
        "traces/fs/fsync_msync.trace",
        "t1 msync m 100 4K => err(EINVAL)",
        "t1 msync m 100 4K => ok",
        "expected ok, got err(EINVAL)",
    );
    // The name is gone at once after unlink.
    mutated_fails(
        "traces/fs/unlink_live_mapping.trace",
        "t2 stat /f => err(ENOENT)",
        "t2 stat /f => size=16K",
        "got err(ENOENT)",
    );
    // Truncate's new size.
    mutated_fails(
        "traces/fs/truncate_during_faults.trace",
        "t2 stat /f => size=0x100800",
        "t2 stat /f => size=1MiB",
        "got ok, size=1050624",
    );
}

#[test]
fn a_statement_expecting_an_error_on_a_missing_file_runs_and_an_msync_past_its_mapping_is_refused()
{
    let t = scratch(
        "missing_ok.trace",
        "pmsim-trace 1\nt1 unlink /nope => err(ENOENT)\nt1 truncate /nope 4K => any\n",
    );
    let (code, out, err) = pmsim(&["run", &t]);
    assert_eq!(code, 0, "{out}{err}");
    let t = scratch(
        "msync_past.trace",
        "pmsim-trace 1\nfile /f size=8K\nt1 mmap /f 0 8K shared as m\nt1 msync m 4K 8K\n",
    );
    let (code, out, err) = pmsim(&["run", &t]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("msync_past.trace:4:1: `t1 msync m`: the range 0x1000..0x3000 passes the end of mapping `m`"),
        "{err}"
    );
}

/// The traces of reflink, pins, O_DIRECT and poison (traces/mf): each starts with a comment and
/// runs clean under trace-order, 15 random schedules and the invariants at every step.
#[test]
fn every_trace_under_traces_mf_runs_clean() {
    let n = all_clean("traces/mf");
    assert!(n >= 7, "{n} traces");
}

#[test]
fn reflink_page_mapping_is_found_by_explore_and_the_fixed_kernel_is_clean() {
    let path = "traces/bugs/reflink-page-mapping.trace";
    let (code, out, err) = pmsim(&["explore", path]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("VIOLATION assertion:hwpoison-owner-missed"),
        "{out}"
    );
    assert!(out.contains("still maps it"), "{out}");
    let text: String = shipped(path)
        .lines()
        .filter(|l| !l.starts_with("bug "))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = scratch("reflink_fixed.trace", &text);
    let (code, out, err) = pmsim(&["explore", &t, "--runs", "200"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A read that mapped a shared block before a copy-on-write fault remapped the page returns
/// the old bytes (the data oracle allows what the file held at any moment of the read): clean
/// in every interleaving at preemption bound 1 (bound 2: 196,352 runs, clean, too slow for CI).
/// Before the rule, dfs reported `data` here at run 69. The fixed schedule is one bound 2
/// found under a rule that allowed only the bytes at the read's start and at its copy: the read
/// began before the reflink (0x00), mapped after it (0x11) and copied after m's store (0x22).
/// Since a punch writes back and deletes only its own range's entries (more steps than the
/// whole-file deletion before), a is still punching when m ends: the schedule's last choice
/// (`1(1)`) is new, a third preemption; the prefix is the one found. With atomic xa_lock
/// sections (`sim` "Atomic sections") t2's part takes one choice less (`2(57)` became `2(56)`):
/// the same run, op for op (event-log hash 79537122110f06a3 both ways).
#[test]
fn a_read_racing_a_copy_on_write_fault_is_clean_at_bound_1() {
    let path = "traces/mf/reflink_read_vs_cow_fault.trace";
    assert_dfs_clean_exhausted(path, "1", &[]);
    let (code, out, err) = pmsim(&["run", path, "--schedule", "1:0:3(20)1(66)3(5)2(56)1(1)"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 preemptions"), "{out}");
}

#[test]
fn poison_and_pin_expectations_can_fail() {
    mutated_fails(
        "traces/mf/poison_sigbus_two_procs.trace",
        "b load m+0 8 => sigbus(ar)",
        "b load m+0 8 => 0x11",
        "expected 0x11, got sigbus",
    );
    mutated_fails(
        "traces/mf/longterm_pin_refused.trace",
        "longterm as lt => err(EOPNOTSUPP)",
        "longterm as lt",
        "got err(EOPNOTSUPP)",
    );
    mutated_fails(
        "traces/mf/reflink_cow_write.trace",
        "t1 load d+16 8 => 0x11",
        "t1 load d+16 8 => 0x22",
        "expected 0x22",
    );
    mutated_fails(
        "traces/mf/metadata_poison_shutdown.trace",
        "t1 stat /f => err(EIO)",
        "t1 stat /f",
        "got err(EIO)",
    );
}

/// `--check-invariants` on write(2) racing read faults: the invalidation of the newly
/// allocated range deletes a clean entry a fault has just mapped, and unmaps it only after
/// (the kernel's window, allowed only while `invalidate_inode_pages2_range` runs, see
/// `sim_mm::invariants::check_leaf_entry`). Exhausted clean at bound 1 here; bound 2: 1,278
/// runs, clean (debug, 12 s CPU). Before the exception, bound 1 reported
/// `invariant:leaf-without-entry` at run 8. That the check still fails on a leaf without an
/// entry outside an invalidation is `a_leaf_without_entry_passes_only_inside_an_invalidation`
/// (sim-mm).
#[test]
fn write_racing_faults_is_clean_with_invariants_at_every_step() {
    assert_dfs_clean_exhausted(
        "traces/fs/write_vs_fault.trace",
        "1",
        &["--check-invariants"],
    );
}
