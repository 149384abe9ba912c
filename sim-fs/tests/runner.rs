//! The trace runner in process: which statements it refuses (exactly the ones not built), and
//! a trace explored with the `Model` directly (the CLI tests drive it through the binary).

use sim_core::machine::MachineConfig;
use sim_core::sim::{ExploreConfig, Strategy, explore};
use sim_core::trace::{OP_KEYWORDS, ParseOptions, parse};
use sim_fs::runner::{TraceRunner, bug_runnable, pattern_bytes, refusals};

fn trace(src: &str) -> sim_core::trace::Trace {
    parse(src, "t.trace", &ParseOptions::default()).unwrap()
}

/// One statement of every op; the refused ones are exactly those not built yet, each at its
/// own line and column 1.
#[test]
fn refusals_list_exactly_the_statements_not_built_yet() {
    let src = "pmsim-trace 1
file /f size=8K
file /g size=8K
t1 create /h
t1 write /f 0 8 0x01
t1 read /f 0 8
t1 stat /f
t1 truncate /f 4K
t1 fallocate /f 0 4K
t1 fsync /f
t1 fdatasync /f
t1 unlink /g
t1 reflink /f /h
t1 mmap /f 0 8K shared as m
t1 munmap m
t1 load m+0 8
t1 store m+0 8 0x02
t1 ntstore m+0 8 0x02
t1 clwb m+0
t1 clflushopt m+0
t1 clflush m+0
t1 sfence
t1 mfence
t1 msync m
t1 madvise m dontneed
t1 fault m+0 write
t1 pin m+0 4K as g
t1 unpin g
t1 dio-read /f 0 4K into m+0
t1 poison /f 0
t1 sleep 1us
t1 yield
";
    let t = trace(src);
    assert_eq!(
        t.statements.len(),
        OP_KEYWORDS.len(),
        "one statement per op"
    );
    let r = refusals(&t, &MachineConfig::default());
    let refused: Vec<&str> = r
        .iter()
        .map(|u| u.what.split_whitespace().nth(1).unwrap())
        .collect();
    // Every statement of the format runs: nothing is refused.
    assert_eq!(refused, Vec::<&str>::new());
    for u in &r {
        assert_eq!(u.col, 1);
        assert!(u.why.starts_with("not built yet"), "{}", u.why);
        let line = src.lines().nth(u.line as usize - 1).unwrap();
        assert!(line.starts_with(&u.what), "{} at line {}", u.what, u.line);
    }
}

#[test]
fn bug_modes_run_only_where_this_build_has_their_mechanism() {
    assert!(bug_runnable("pmd-missed-wakeup"));
    assert!(bug_runnable("no-mmaplock"));
    assert!(bug_runnable("reflink-page-mapping"));
    // The file-system crash modes are decided in daxfs (journal, setfilesize).
    assert!(bug_runnable("journal-no-fence"));
    assert!(bug_runnable("torn-inode-size"));
    let t = trace("pmsim-trace 1\nbug torn-inode-size\nt1 yield\n");
    assert_eq!(refusals(&t, &MachineConfig::default()), vec![]);
}

#[test]
fn patterns_follow_the_format() {
    use sim_core::trace::Pattern;
    assert_eq!(pattern_bytes(&Pattern::Byte(0xab), 3), [0xab; 3]);
    assert_eq!(
        pattern_bytes(&Pattern::U64(0x1122334455667788), 10),
        [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x88, 0x77]
    );
    assert_eq!(pattern_bytes(&Pattern::Text("ab".into()), 5), *b"ababa");
    let r = pattern_bytes(&Pattern::Rand(7), 64);
    assert_eq!(r, pattern_bytes(&Pattern::Rand(7), 64));
    assert_ne!(r, pattern_bytes(&Pattern::Rand(8), 64));
    assert_eq!(&pattern_bytes(&Pattern::Rand(7), 100)[..64], &r[..]);
}

/// The runner as a `Model`: a store seen by a second process under every interleaving of a
/// bounded dfs (the data oracle checks each load), and an unmet expectation found.
#[test]
fn a_runner_model_explores_clean_and_finds_an_unmet_expectation() {
    let ok = "pmsim-trace 1
machine cpus=2 pmem=16MiB
file /f size=8K fill=0x33 prealloc
a mmap /f 0 8K shared nohuge as m
b mmap /f 0 8K shared nohuge as m
a store m+0 8 0x44
b load m+0 8 => 0x33|0x44
";
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: Some(1),
        },
        ..ExploreConfig::default()
    };
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(16u64 << 20).to_string()).unwrap();
    mc.set("cpus", "2").unwrap();
    let model = TraceRunner::new(trace(ok), mc.clone(), &[]).unwrap();
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted && rep.runs > 5, "runs {}", rep.runs);
    let bad = ok.replace("0x33|0x44", "0x33");
    let model = TraceRunner::new(trace(&bad), mc, &[]).unwrap();
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    let f = rep.failure.expect("b can load after a's store");
    let v = f.violation.to_string();
    assert!(
        v.contains("thread b, line 7") && v.contains("got ok, 8 bytes of 0x44"),
        "{v}"
    );
}

/// The data oracle: a task outside the trace overwrites the file's blocks behind the file
/// system's back; the load that then returns those bytes is reported as a `data` violation
/// (the trace itself expects nothing of the bytes).
#[test]
fn the_data_oracle_catches_bytes_the_execution_does_not_imply() {
    tampered_bytes_are_caught(
        "t load m+0 8 => any",
        "returned 0x77, but the execution implies 0x11",
    );
}

/// A read may return what the file held at any moment while it ran (the module header of
/// sim-fs/src/runner_file.rs), never bytes the file never held.
#[test]
fn the_read_oracle_catches_bytes_the_file_never_held() {
    tampered_bytes_are_caught(
        "t read /f 0 8 => any",
        "returned 0x77, but the execution implies 0x11 there, and the file did not hold it at \
         any moment of the read",
    );
}

/// A task stores 0x77 straight to the media under the 0x11 file while thread t sleeps, then t
/// runs `statement`: the oracle reports `message`.
fn tampered_bytes_are_caught(statement: &str, message: &str) {
    use sim_core::PmemPlatform;
    use sim_core::Spawner;
    use sim_core::sim::{Model, Sim};
    use sim_fs::layout::{Geometry, PMD_SIZE};
    let src = format!(
        "pmsim-trace 1
machine cpus=2 pmem=16MiB
file /f size=8K fill=0x11 prealloc
t mmap /f 0 8K shared nohuge as m
t sleep 1ms
{statement}
"
    );
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(16u64 << 20).to_string()).unwrap();
    let runner = TraceRunner::new(trace(&src), mc, &[]).unwrap();
    let geo = Geometry::new(16 << 20, 4096).unwrap();
    let first = geo.addr(geo.data_start);
    let aligned = first.div_ceil(PMD_SIZE) * PMD_SIZE;
    let model = move |sim: &mut Sim| {
        runner.setup(sim);
        let p = sim.platform();
        sim.spawn("tamper", move || async move {
            for a in [first, aligned] {
                p.pmem_store(a, &[0x77; 8192]).await.unwrap();
            }
        });
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: Some(1),
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    let f = rep.failure.expect("the tampered bytes are loaded");
    let v = f.violation.to_string();
    assert!(v.contains("data") && v.contains(message), "{v}");
}

/// `madvise M pageout`: on today's DAX core it evicts nothing (no DAX page is on an LRU), so
/// every access after it hits the same translations; with bug mode `shadow-entries`, the 4.x
/// hole pages are page-cache pages that write(2), write faults and truncate replace or remove
/// (clean), and the one `pageout` evicts leaves a
/// shadow whose workingset bit reads as DAX_LOCKED: the next fault of its index never wakes.
#[test]
fn madvise_pageout_evicts_only_the_hole_pages_of_the_shadow_entries_era() {
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(16u64 << 20).to_string()).unwrap();
    mc.set("cpus", "2").unwrap();
    let run = |src: &str, bound: u32, every_step: bool| {
        let mut model = TraceRunner::new(trace(src), mc.clone(), &[]).unwrap();
        model.check_every_step = every_step;
        let cfg = ExploreConfig {
            strategy: Strategy::Dfs {
                preemption_bound: Some(bound),
            },
            ..ExploreConfig::default()
        };
        explore(&model, &cfg, &mut |_| {}).unwrap()
    };
    // Modern core: zero entries and pmem pages stay mapped; the loads after the pageout find
    // them (a fault of the hole would be a new zero entry: the oracle checks the bytes anyway).
    let modern = "pmsim-trace 1
machine cpus=2 pmem=16MiB
file /f size=64K fill=0x5a prealloc
file /h size=64K hole
t mmap /f 0 64K shared nohuge as a
t mmap /h 0 64K shared nohuge as b
t load a+0 8 => 0x5a
t load b+0x1000 8 => zero
t madvise a pageout
t madvise b pageout 0 8K
t load a+0 8 => 0x5a
t load b+0x1000 8 => zero
t store b+0x1000 8 0x77
t fsync /h
t load b+0x1000 8 => 0x77
";
    let rep = run(modern, 1, true);
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted);
    // The era's hole pages without eviction: two threads race reads of holes (hole pages) with
    // write(2) over one of them, a write fault over the other and a truncate.
    let era = "pmsim-trace 1
machine cpus=2 pmem=16MiB
bug shadow-entries
proc p threads=r,w
file /h size=64K hole
r mmap /h 0 64K shared nohuge as m
r load m+0 8 => zero|0xa1
w write /h 0 8 0xa1
r load m+0x2000 8 => zero|sigbus
r store m+0x2000 8 0x77 => ok|sigbus
r load m+0 8 => zero|0xa1
w truncate /h 4K
";
    // Every step: write(2)'s invalidate_inode_pages2_range removes an entry that a racing
    // fault mapped after its first unmap, until its second unmap (the kernel's window too),
    // which the leaf invariant allows only while the invalidation runs.
    let rep = run(era, 1, true);
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted && rep.runs > 10, "runs {}", rep.runs);
    // The eviction: the next fault of the index sleeps on the shadow's "lock".
    let evicted = era.replace("r store m+0x2000", "r madvise m pageout\nr store m+0x2000");
    let rep = run(&evicted, 0, true);
    let f = rep.failure.expect("the write fault waits on the shadow");
    let v = f.violation.to_string();
    assert!(
        v.contains("lost-wakeup") && v.contains("grab_mapping_entry"),
        "{v}"
    );
}

/// The setup's memory operations are recorded by the first run and replayed by the later ones
/// (`TraceRunner::setup_memo_ops`): every run must be what it is with the setup run afresh
/// (a new runner per run): same schedules, ends, steps, event-log hashes, clocks and machine
/// counters, under pct and dfs, on traces with poison, reflink, crash sections and bug modes.
#[test]
fn runs_after_a_replayed_setup_are_the_runs_after_a_fresh_one() {
    use sim_core::sim::explore::explore_observed;
    use sim_core::sim::{Model, RunEnd, Sim};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../traces/");
    for name in [
        "seeds/000-mf-vs-entry-locks.trace",
        "seeds/004-reflink-page-mapping.trace",
        "mf/reflink_cow_poisoned_source.trace",
        "mf/metadata_poison_shutdown.trace",
        "crash/map_sync_flush.trace",
    ] {
        let src = std::fs::read_to_string(format!("{dir}{name}")).unwrap();
        let t = parse(&src, name, &ParseOptions::default()).unwrap();
        let mut mc = MachineConfig::default();
        if let Some(m) = &t.header.machine {
            if let Some(c) = m.cpus {
                mc.set("cpus", &c.to_string()).unwrap();
            }
            if let Some(p) = m.pmem {
                mc.set("pmem", &p.to_string()).unwrap();
            }
        }
        let shared = TraceRunner::new(t.clone(), mc.clone(), &[]).unwrap();
        for strategy in [
            Strategy::Pct { depth: 3 },
            Strategy::Dfs {
                preemption_bound: Some(1),
            },
        ] {
            let cfg = ExploreConfig {
                strategy,
                runs: Some(8),
                keep_going: true,
                ..ExploreConfig::default()
            };
            let seen = |model: &dyn Model| {
                let mut runs = Vec::new();
                let mut observe = |sim: &Sim, end: &RunEnd| {
                    runs.push(format!(
                        "{:?} {:?} {} {:x} {} {} {:?}",
                        sim.choices(),
                        end,
                        sim.steps(),
                        sim.hash(),
                        sim.cpu_clock(0),
                        sim.cpu_clock(1),
                        sim.with_machine(|m| m.stats())
                    ));
                };
                explore_observed(model, &cfg, &mut |_| {}, &mut observe).unwrap();
                runs
            };
            // A new runner for each run (made before the search: a runner builds its image
            // in a simulation of its own), so each run records its setup afresh.
            let pool: Vec<TraceRunner> = (0..8)
                .map(|_| TraceRunner::new(t.clone(), mc.clone(), &[]).unwrap())
                .collect();
            let pool = std::cell::RefCell::new(pool);
            let fresh = |sim: &mut Sim| {
                let r = pool.borrow_mut().pop().expect("a runner per run");
                r.setup(sim);
                assert_eq!(r.setup_memo_ops().is_some(), sim.violation().is_none());
            };
            let a = seen(&fresh);
            let b = seen(&shared);
            assert!(!a.is_empty(), "{name}: no run");
            assert_eq!(a, b, "{name}");
            let ops = shared.setup_memo_ops().unwrap_or(0);
            assert!(ops > 5, "{name}: {ops} setup memory operations replayed");
        }
    }
}

/// Process exit at the end of a run (`exit_processes` in sim-fs/src/runner_file.rs): after the
/// last thread, every process's pins go and its VMAs are unmapped, so an unlinked file still
/// mapped is evicted and no page keeps a reference. Checked from an end check, on the state
/// every other end check sees. Before exit was modelled, the mappings, the pin and the
/// unlinked inode all stayed to the end.
#[test]
fn processes_exit_at_the_end_of_the_run() {
    use sim_core::sim::{CheckFailure, Model, Sim};
    use std::sync::Arc;
    let src = "pmsim-trace 1
machine cpus=2 pmem=16MiB
proc p threads=t,u
file /f size=8K fill=0x11 prealloc
file /g size=8K fill=0x22 prealloc
t mmap /f 0 8K shared nohuge as m
t load m+0 8 => 0x11
u mmap /g 0 8K shared nohuge as n
u store n+0 8 0x33
u pin n+0 4K as g
t unlink /f
t load m+0 8 => 0x11
";
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(16u64 << 20).to_string()).unwrap();
    mc.set("cpus", "2").unwrap();
    let runner = Arc::new(TraceRunner::new(trace(src), mc, &[]).unwrap());
    let model = move |sim: &mut Sim| {
        runner.setup(sim);
        let p = sim.platform();
        let r = runner.clone();
        sim.add_end_check(move || {
            let w = r.inspect().expect("the setup ran");
            let s = sim_mm::invariants::peek_snapshot(&p, &w.world).expect("no lock held");
            let f = |m: String| {
                Some(CheckFailure {
                    name: "not-exited".into(),
                    message: m,
                })
            };
            if let Some(mm) = s.mms.iter().find(|mm| !mm.vmas.is_empty()) {
                return f(format!("{:?} still maps {:?}", mm.id, mm.vmas));
            }
            if let Some(pg) = s.memmap.pages().find(|pg| pg.refcount > 0) {
                return f(format!("a page is still referenced: {pg:?}"));
            }
            // The only file that can be evicted is the unlinked /f.
            if s.freed_mappings.is_empty() {
                return f("/f was unlinked and is mapped no more, but not evicted".into());
            }
            None
        });
    };
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: Some(1),
        },
        ..ExploreConfig::default()
    };
    let rep = explore(&model, &cfg, &mut |_| {}).unwrap();
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted && rep.runs > 1, "runs {}", rep.runs);
}

/// The end of a run (process exit, the end checks) is the end-of-run task's, which joins every
/// thread in one step: its steps happen after every step of every thread, so DPOR sees no race
/// between them and the threads' earlier steps (which they can never precede), nor between a
/// thread's end and the join (the join cannot come first). On this trace: 34 runs, 20 cut
/// short by sleep sets (14 complete; 32 complete before one-step rwsem sections and wait-queue
/// ops that change nothing became reads of their object, which leaves more steps independent
/// and more reversals covered by sleep sets). With the end done by the last thread to finish,
/// after a read of the other threads' exits, it took 40 runs (38 complete): the two ends raced
/// ("who is last"); without that read, 58 runs (32 complete). The answer is the same either
/// way (clean, exhausted).
#[test]
fn the_end_of_a_run_comes_after_every_other_thread_for_dpor() {
    let src = "pmsim-trace 1
machine cpus=2 pmem=64MiB
proc app threads=a,b
file /h size=1MiB hole
a create /new
a stat /new => size=0
a mmap /h 0 1MiB shared as m
a load m+0x3000 8 => zero
a store m+0x3000 8 0xab
b yield
b stat /h => size=1MiB
";
    let rep = unbounded_dfs(src, 64);
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted, "runs {}", rep.runs);
    // Fewer than when the two threads' ends raced, complete or not.
    let complete = rep.runs - rep.redundant_runs;
    assert!(
        rep.runs < 40 && complete < 32,
        "runs {}, {complete} complete",
        rep.runs
    );
}

/// Three threads (processes of their own) that each stat a file of their own: nothing they do
/// conflicts, and their ends conflict with nothing but the end-of-run task's join, so DPOR
/// exhausts the space in one run. With the end done by the last thread to finish it took 6
/// runs (every order of the three ends); with the end task joining the threads one by one,
/// 3 runs (2 cut short: each join could move among the other threads' steps).
#[test]
fn thread_ends_do_not_race_for_dpor() {
    let src = "pmsim-trace 1
machine cpus=2 pmem=16MiB
file /f size=64K fill=0x11 prealloc
file /g size=64K fill=0x22 prealloc
file /h size=64K fill=0x33 prealloc
a stat /f => size=64K
b stat /g => size=64K
c stat /h => size=64K
";
    let rep = unbounded_dfs(src, 16);
    assert!(rep.failure.is_none(), "{}", rep.failure.unwrap().violation);
    assert!(rep.exhausted);
    assert_eq!((rep.runs, rep.redundant_runs), (1, 0));
}

/// Unbounded dfs (DPOR and sleep sets) over trace `src` on a 2-CPU machine with `pmem_mib` MiB
/// of pmem.
fn unbounded_dfs(src: &str, pmem_mib: u64) -> sim_core::sim::ExploreReport {
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(pmem_mib << 20).to_string()).unwrap();
    mc.set("cpus", "2").unwrap();
    let runner = TraceRunner::new(trace(src), mc, &[]).unwrap();
    let cfg = ExploreConfig {
        strategy: Strategy::Dfs {
            preemption_bound: None,
        },
        ..ExploreConfig::default()
    };
    explore(&runner, &cfg, &mut |_| {}).unwrap()
}

/// Plain DFS (no sleep sets, no DPOR), sleep sets and DPOR reach the same final states on a
/// three-thread trace whose outcome depends on the order (`b` and `c` stat the file `a`
/// creates: either may find it missing), with the end-of-run task after the threads: the
/// violation (kind and message) or a clean end, and each thread's counts.
#[test]
fn every_reduction_reaches_the_final_states_of_plain_dfs_with_the_end_task() {
    use sim_core::sim::RunEnd;
    use sim_core::sim::reduction::compare_reductions;
    let src = "pmsim-trace 1
machine cpus=2 pmem=8MiB
proc app threads=a,b,c
file /f size=4K fill=0x11 prealloc
a create /x
b stat /x => size=0
c stat /x => size=0
";
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(8u64 << 20).to_string()).unwrap();
    mc.set("cpus", "2").unwrap();
    let runner = TraceRunner::new(trace(src), mc, &[]).unwrap();
    let mut observe = |_: &sim_core::sim::Sim, end: &RunEnd| {
        let end = match end {
            RunEnd::Violation(v) => format!("{}: {}", v.kind.name(), v.message),
            other => format!("{other:?}"),
        };
        let stats: Vec<(String, u64, u64)> = sim_fs::runner::last_run_stats()
            .into_iter()
            .map(|(t, s)| (t, s.statements, s.errors))
            .collect();
        (end, stats)
    };
    let c = compare_reductions(&runner, &mut observe).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}: {:?}", c.runs(), c.plain.outcomes);
    // Clean, b finds no /x, c finds no /x (the first unmet expectation ends the run).
    let ends: std::collections::BTreeSet<&String> = c.plain.outcomes.iter().map(|o| &o.0).collect();
    assert_eq!(ends.len(), 3, "{:?}", c.plain.outcomes);
    assert!(c.dpor.runs < c.plain.runs, "{}", c.runs());
}

/// The worker threads of a divided search share one runner: each thread inspects the world of
/// its own last run, and a setup on one thread leaves the other threads' worlds alone (it used
/// to replace and drop them: another thread's simulation, dropped on this one).
#[test]
fn each_thread_inspects_and_keeps_its_own_last_world() {
    use sim_core::sim::{Model, Sim, SimConfig};
    use std::sync::Arc;
    use std::sync::mpsc::channel;
    let src = "pmsim-trace 1
file /f size=8K
t read /f 0 8
";
    let mut mc = MachineConfig::default();
    mc.set("pmem", &(8u64 << 20).to_string()).unwrap();
    let runner = TraceRunner::new(trace(src), mc, &[]).unwrap();
    let one_setup = |r: &TraceRunner| {
        let mut sim = Sim::new(SimConfig::default());
        r.setup(&mut sim);
        drop(sim);
        r.inspect().expect("the setup ran")
    };
    let (to_a, at_a) = channel::<()>();
    let (from_a, set_up) = channel::<()>();
    std::thread::scope(|s| {
        let (r, one_setup) = (&runner, &one_setup);
        let a = s.spawn(move || {
            let mine = one_setup(r);
            let weak = Arc::downgrade(&mine.world);
            drop(mine);
            from_a.send(()).unwrap();
            at_a.recv().unwrap();
            // Thread b has set up a run of its own since.
            let again = r.inspect().expect("this thread's world is kept");
            assert!(
                weak.upgrade()
                    .is_some_and(|w| Arc::ptr_eq(&w, &again.world)),
                "thread a sees another world than its own last one"
            );
        });
        set_up.recv().unwrap();
        let b = s.spawn(move || {
            let theirs = one_setup(r);
            assert!(
                r.inspect()
                    .is_some_and(|w| Arc::ptr_eq(&w.world, &theirs.world))
            );
        });
        b.join().unwrap();
        to_a.send(()).unwrap();
        a.join().unwrap();
    });
    // This thread never set a run up.
    assert!(runner.inspect().is_none());
}
