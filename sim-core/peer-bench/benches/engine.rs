//! `cargo bench -p pmsim-peer-bench --bench engine`: the event queue's events/s, and pmsim on
//! all five toy models beside shuttle and loom running the same models in the same process.
//! pmsim runs the `-main` shapes of the toys (`toys::TOYS_MAIN`): a main task builds the
//! objects, spawns the workers and joins them, as the shuttle and loom versions do. Reported:
//! - throughput (random, pct2, pct3; medians of 3 seeds): schedules/s and scheduling points/s
//!   side by side, and pmsim's ratio to shuttle per schedule and per scheduling point. A
//!   scheduling point is a pmsim step (every announced operation, also with one task able to
//!   move) and a shuttle `Scheduler::next_task` call (counted by a wrapping scheduler). On the
//!   buggy models a failing schedule is counted like any other (pmsim keeps going; shuttle is
//!   restarted after each failure, which is its cost of a failure);
//! - DFS on the same models: pmsim plain DFS, pmsim DFS with sleep sets, shuttle's DFS, loom at
//!   preemption bounds 2 and 3: executions and time, each measured with a time cap, never
//!   assumed (shuttle and loom stop at the first failure of a buggy model);
//! - the time to the first failure on the two buggy models.
//!
//! Environment: `BENCH_ITERS` (default 100000), `BENCH_DFS_SECS` (cap for shuttle's DFS and for
//! each loom run, default 10). Loom cannot be stopped from inside, so each loom run is this
//! binary re-executed in a child process (`PEER_BENCH_LOOM=MODEL:BOUND`) and killed at the cap.
//! Shuttle's own output for a failing run (the panic and the schedule) goes to /dev/null.

use sim_core::events::EventQueue;
use sim_core::platform::TaskId;
use sim_core::sim::{ExploreConfig, Sim, Strategy, explore};
use sim_core::toys;
use std::time::{Duration, Instant};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The same models for shuttle and loom: the main thread spawns the workers and joins them.
macro_rules! peer_models {
    ($m:ident, $rt:ident) => {
        mod $m {
            use $rt::sync::{Arc, Condvar, Mutex};
            use $rt::thread;

            pub fn abba(fixed: bool) {
                let a = Arc::new(Mutex::new(0u32));
                let b = Arc::new(Mutex::new(0u32));
                let mut hs = Vec::new();
                for a_first in [true, fixed] {
                    let (a, b) = (a.clone(), b.clone());
                    hs.push(thread::spawn(move || {
                        let (x, y) = if a_first { (&a, &b) } else { (&b, &a) };
                        let mut gx = x.lock().unwrap();
                        let mut gy = y.lock().unwrap();
                        *gx += 1;
                        *gy += 1;
                    }));
                }
                for h in hs {
                    h.join().unwrap();
                }
            }

            pub fn lost_wakeup(correct: bool) {
                let st = Arc::new((Mutex::new(false), Condvar::new(), Condvar::new()));
                let s1 = st.clone();
                let w = thread::spawn(move || {
                    let (m, c1, _) = &*s1;
                    let mut g = m.lock().unwrap();
                    while !*g {
                        g = c1.wait(g).unwrap();
                    }
                });
                let s2 = st.clone();
                let k = thread::spawn(move || {
                    let (m, c1, c2) = &*s2;
                    *m.lock().unwrap() = true;
                    if correct {
                        c1.notify_one()
                    } else {
                        c2.notify_one()
                    }
                });
                w.join().unwrap();
                k.join().unwrap();
            }

            pub fn lw3x4() {
                let st = Arc::new((Mutex::new((0u32, 0u32)), Condvar::new()));
                let mut hs = Vec::new();
                for waiter in [true, false, false] {
                    let st = st.clone();
                    hs.push(thread::spawn(move || {
                        let (m, c) = &*st;
                        for _ in 0..3 {
                            m.lock().unwrap().0 += 1;
                        }
                        if waiter {
                            let mut g = m.lock().unwrap();
                            while g.1 < 2 {
                                g = c.wait(g).unwrap();
                            }
                            assert_eq!(g.0, 9);
                        } else {
                            m.lock().unwrap().1 += 1;
                            c.notify_one();
                        }
                    }));
                }
                for h in hs {
                    h.join().unwrap();
                }
            }

            pub fn by_name(name: &str) -> fn() {
                match name {
                    "abba" => || abba(false),
                    "abba-fixed" => || abba(true),
                    "lost-wakeup" => || lost_wakeup(false),
                    "lost-wakeup-correct" => || lost_wakeup(true),
                    _ => lw3x4,
                }
            }
        }
    };
}

peer_models!(shuttle_models, shuttle);
peer_models!(loom_models, loom);

fn shuttle_config(max: Option<Duration>) -> shuttle::Config {
    let mut c = shuttle::Config::new();
    c.failure_persistence = shuttle::FailurePersistence::None;
    c.silence_warnings = true;
    c.max_time = max;
    c
}

fn toy_model(name: &'static str) -> impl Fn(&mut Sim) {
    move |sim: &mut Sim| {
        let p = sim.platform();
        toys::build(name, &p, sim);
    }
}

/// One pmsim search.
struct Ours {
    runs: u64,
    steps: u64,
    secs: f64,
    exhausted: bool,
    failed_runs: u64,
}

/// pmsim on toy `name`, keeping going after failures.
fn pmsim(
    name: &'static str,
    strategy: Strategy,
    runs: Option<u64>,
    seed: u64,
    sleep_sets: bool,
    budget: Option<Duration>,
) -> Ours {
    let cfg = ExploreConfig {
        strategy,
        seed,
        runs,
        sleep_sets,
        budget,
        keep_going: true,
        ..ExploreConfig::default()
    };
    let t = Instant::now();
    let r = explore(&toy_model(name), &cfg, &mut |_| {}).expect("explore");
    Ours {
        runs: r.runs,
        steps: r.total_steps,
        secs: t.elapsed().as_secs_f64(),
        exhausted: r.exhausted,
        failed_runs: r.failed_runs,
    }
}

/// A shuttle scheduler counting its scheduling points (`next_task` calls).
struct Counting<S> {
    inner: S,
    points: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S: shuttle::scheduler::Scheduler> shuttle::scheduler::Scheduler for Counting<S> {
    fn new_execution(&mut self) -> Option<shuttle::scheduler::Schedule> {
        self.inner.new_execution()
    }

    fn next_task(
        &mut self,
        runnable: &[&shuttle::scheduler::Task],
        current: Option<shuttle::scheduler::TaskId>,
        is_yielding: bool,
    ) -> Option<shuttle::scheduler::TaskId> {
        self.points
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.next_task(runnable, current, is_yielding)
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

fn event_queue_bench() -> f64 {
    let mut q = EventQueue::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..1024u64 {
        q.push(i * 7, TaskId(i as u32));
    }
    let n = 20_000_000u64;
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        let e = q.pop().expect("non-empty");
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(e.seq);
        q.push(e.time + (x & 1023), e.kind);
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    n as f64 / secs
}

/// Runs `f` with the process's stderr on /dev/null and no panic hook: shuttle reports every
/// failing run (its panic and its schedule) on stderr, which would interleave with the tables.
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok();
    // SAFETY: dup/dup2/close act on descriptor 2 and on descriptors this function owns; the
    // saved copy of stderr is put back before returning.
    let saved = unsafe { libc::dup(2) };
    if let Some(n) = &null
        && saved >= 0
    {
        unsafe { libc::dup2(n.as_raw_fd(), 2) };
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(prev);
    if saved >= 0 {
        // SAFETY: as above.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
    r
}

fn strategy_of(sched: &str) -> Strategy {
    match sched {
        "random" => Strategy::Random,
        "pct2" => Strategy::Pct { depth: 2 },
        "pct3" => Strategy::Pct { depth: 3 },
        _ => Strategy::Dfs {
            preemption_bound: None,
        },
    }
}

/// One shuttle search.
struct Theirs {
    schedules: u64,
    points: u64,
    secs: f64,
    /// The search stopped at a failing schedule.
    failed: bool,
}

/// Shuttle on `f` with one scheduler, for at most `iters` schedules (0: DFS to the end) and
/// `cap`. A failing model panics out of shuttle at its first failure; with `restart`, shuttle
/// is started again (seed + 1) until `iters` schedules ran.
fn shuttle_count(
    f: fn(),
    sched: &str,
    iters: u64,
    seed: u64,
    cap: Option<Duration>,
    restart: bool,
) -> Theirs {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let counter = std::sync::Arc::new(AtomicU64::new(0));
    let points = std::sync::Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut failed = false;
    let mut k = 0;
    loop {
        let left = iters.saturating_sub(counter.load(Relaxed)) as usize;
        let c2 = counter.clone();
        let g = move || {
            c2.fetch_add(1, Relaxed);
            f()
        };
        let pts = points.clone();
        let max = cap.map(|c| c.saturating_sub(t.elapsed()));
        let ok = quietly(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match sched {
                "random" => shuttle::Runner::new(
                    Counting {
                        inner: shuttle::scheduler::RandomScheduler::new_from_seed(seed + k, left),
                        points: pts,
                    },
                    shuttle_config(max),
                )
                .run(g),
                "pct2" | "pct3" => shuttle::Runner::new(
                    Counting {
                        inner: shuttle::scheduler::PctScheduler::new_from_seed(
                            seed + k,
                            if sched == "pct2" { 2 } else { 3 },
                            left,
                        ),
                        points: pts,
                    },
                    shuttle_config(max),
                )
                .run(g),
                _ => shuttle::Runner::new(
                    Counting {
                        inner: shuttle::scheduler::DfsScheduler::new(None, false),
                        points: pts,
                    },
                    shuttle_config(max),
                )
                .run(g),
            }))
            .is_ok()
        });
        failed |= !ok;
        k += 1;
        let out_of_time = cap.is_some_and(|c| t.elapsed() >= c);
        if ok || !restart || out_of_time || counter.load(Relaxed) >= iters {
            break;
        }
    }
    Theirs {
        schedules: counter.load(Relaxed),
        points: points.load(Relaxed),
        secs: t.elapsed().as_secs_f64(),
        failed,
    }
}

/// In the child process: loom on one model at one bound; prints "SCHEDULES SECONDS".
fn loom_child(spec: &str) {
    let (name, bound) = spec.split_once(':').unwrap_or((spec, "2"));
    let f = loom_models::by_name(name);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = counter.clone();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = bound.parse().ok();
    let t = Instant::now();
    // A failing model panics out of `check` at its first failure: report where.
    let ok = quietly(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.check(move || {
                c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                f()
            })
        }))
        .is_ok()
    });
    println!(
        "{} {} {}",
        counter.load(std::sync::atomic::Ordering::Relaxed),
        t.elapsed().as_secs_f64(),
        if ok { "exhausted" } else { "failed" }
    );
}

/// Loom on `name` at preemption bound `bound`, in a child process killed after `cap`.
fn loom_measured(name: &str, bound: u32, cap: Duration) -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "not measured (no current_exe)".into();
    };
    let child = std::process::Command::new(exe)
        .env("PEER_BENCH_LOOM", format!("{name}:{bound}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return "not measured (spawn failed)".into();
    };
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t.elapsed() < cap => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("bound {bound}: did not finish in {} s", cap.as_secs());
            }
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    let mut it = out.split_whitespace();
    match (
        it.next().and_then(|x| x.parse::<u64>().ok()),
        it.next().and_then(|x| x.parse::<f64>().ok()),
        it.next(),
    ) {
        (Some(n), Some(secs), Some("exhausted")) => {
            format!("bound {bound}: exhausted, {n} in {secs:.3} s")
        }
        (Some(n), Some(secs), _) => {
            format!("bound {bound}: failure at execution {n} ({secs:.3} s)")
        }
        // Loom aborts the process on some failures (a deadlock) before the count is printed.
        _ => format!("bound {bound}: failed, the child ended without a count ({status})"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("PEER_BENCH_LOOM") {
        loom_child(&spec);
        return;
    }
    // `cargo test --benches` runs this with `--bench`-less args; keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let iters = env_u64("BENCH_ITERS", 100_000);
    let cap = Duration::from_secs(env_u64("BENCH_DFS_SECS", 10));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "machine: {cpu}, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "shuttle 0.9 and loom 0.7 run the same models in this process; pmsim runs their shape \
         (toys::TOYS_MAIN: a main task spawns the workers and joins them). A scheduling point \
         is a pmsim step or a shuttle next_task call; the two engines do not put them at the \
         same places (pmsim: every lock, unlock, wait-queue op, spawn and join; shuttle: its \
         own switch points), so both ratios are shown."
    );
    println!();

    let eq: Vec<f64> = (0..3).map(|_| event_queue_bench()).collect();
    println!(
        "event queue: {:.1} M events/s (median of 3; target >= 20 M/s)",
        median(eq) / 1e6
    );
    println!();

    let correct = ["abba-fixed", "lost-wakeup-correct", "lw3x4"];
    let buggy = ["abba", "lost-wakeup"];
    assert_eq!(correct.len() + buggy.len(), toys::TOYS.len());
    let all: Vec<&'static str> = correct.iter().chain(&buggy).copied().collect();
    let main_of = |name: &str| -> &'static str {
        toys::TOYS_MAIN
            .into_iter()
            .find(|m| m.strip_suffix("-main") == Some(name))
            .expect("every toy has a -main shape")
    };

    println!(
        "throughput, {iters} schedules per run, median of 3 (seeds 1..3); failing schedules \
         of the buggy models count like the others:"
    );
    println!(
        "| model | strategy | pmsim schedules/s | shuttle schedules/s | per schedule | \
         pmsim points/s | shuttle points/s | per point | points/schedule pmsim, shuttle |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut worst_per_point = f64::INFINITY;
    for &name in &all {
        for sched in ["random", "pct2", "pct3"] {
            let (mut os, mut op, mut ts, mut tp, mut oppr, mut tppr) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for seed in 1..=3 {
                let o = pmsim(
                    main_of(name),
                    strategy_of(sched),
                    Some(iters),
                    seed,
                    true,
                    None,
                );
                assert!(
                    correct.contains(&name) == (o.failed_runs == 0),
                    "{name}: {} failed runs",
                    o.failed_runs
                );
                os.push(o.runs as f64 / o.secs);
                op.push(o.steps as f64 / o.secs);
                oppr.push(o.steps as f64 / o.runs as f64);
                let t = shuttle_count(
                    shuttle_models::by_name(name),
                    sched,
                    iters,
                    seed,
                    None,
                    true,
                );
                ts.push(t.schedules as f64 / t.secs);
                tp.push(t.points as f64 / t.secs);
                tppr.push(t.points as f64 / t.schedules.max(1) as f64);
            }
            let (os, op, ts, tp) = (median(os), median(op), median(ts), median(tp));
            worst_per_point = worst_per_point.min(op / tp);
            println!(
                "| {name} | {sched} | {:.0}k | {:.0}k | {:.2}x | {:.2}M | {:.2}M | {:.2}x | {:.1}, {:.1} |",
                os / 1e3,
                ts / 1e3,
                os / ts,
                op / 1e6,
                tp / 1e6,
                op / tp,
                median(oppr),
                median(tppr)
            );
        }
    }
    println!("lowest pmsim/shuttle ratio per scheduling point: {worst_per_point:.2}x");
    println!();

    println!("time to the first failure on the buggy models, median over seeds 1..20:");
    println!(
        "| model | strategy | pmsim schedules | pmsim time | shuttle schedules | shuttle time |"
    );
    println!("|---|---|---|---|---|---|");
    for name in buggy {
        for sched in ["random", "pct2", "pct3", "dfs"] {
            let seeds = if sched == "dfs" { 1..=1u64 } else { 1..=20u64 };
            let (mut or, mut ot, mut sr, mut stt) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for seed in seeds {
                let runs = (sched != "dfs").then_some(100_000);
                let cfg = ExploreConfig {
                    strategy: strategy_of(sched),
                    seed,
                    runs,
                    ..ExploreConfig::default()
                };
                let t = Instant::now();
                let r = explore(&toy_model(main_of(name)), &cfg, &mut |_| {}).expect("explore");
                ot.push(t.elapsed().as_secs_f64() * 1e6);
                or.push(r.failure.map(|f| f.run + 1).unwrap_or(u64::MAX) as f64);
                let th = shuttle_count(
                    shuttle_models::by_name(name),
                    sched,
                    100_000,
                    seed,
                    Some(cap),
                    false,
                );
                sr.push(th.schedules as f64);
                stt.push(th.secs * 1e6);
            }
            println!(
                "| {name} | {sched} | {:.1} | {:.0} us | {:.1} | {:.0} us |",
                median(or),
                median(ot),
                median(sr),
                median(stt)
            );
        }
    }
    println!();

    println!(
        "DFS on the same models (pmsim plain: every interleaving; pmsim sleep sets; shuttle \
         dfs unbounded; loom at preemption bounds 2 and 3; cap {} s each; shuttle and loom \
         stop at the first failure, pmsim keeps going):",
        cap.as_secs()
    );
    println!("| model | pmsim plain DFS | pmsim sleep-set DFS | shuttle DFS | loom |");
    println!("|---|---|---|---|---|");
    let show = |o: &Ours| {
        format!(
            "{}: {} runs ({} failing) in {:.3} s, {:.0}k steps/s",
            if o.exhausted {
                "exhausted"
            } else {
                "NOT exhausted"
            },
            o.runs,
            o.failed_runs,
            o.secs,
            o.steps as f64 / o.secs / 1e3
        )
    };
    for &name in &all {
        let dfs = strategy_of("dfs");
        let plain = pmsim(main_of(name), dfs.clone(), None, 0, false, Some(cap));
        let reduced = pmsim(main_of(name), dfs, None, 0, true, Some(cap));
        let t = shuttle_count(shuttle_models::by_name(name), "dfs", 0, 0, Some(cap), false);
        let theirs = if t.failed {
            format!("failure at schedule {} ({:.3} s)", t.schedules, t.secs)
        } else if t.secs >= cap.as_secs_f64() {
            format!(
                "NOT exhausted in {} s ({} schedules)",
                cap.as_secs(),
                t.schedules
            )
        } else {
            format!(
                "exhausted: {} schedules in {:.3} s, {:.0}k points/s",
                t.schedules,
                t.secs,
                t.points as f64 / t.secs / 1e3
            )
        };
        let loom = [2, 3].map(|b| loom_measured(name, b, cap)).join("; ");
        println!(
            "| {name} | {} | {} | {theirs} | {loom} |",
            show(&plain),
            show(&reduced)
        );
    }
}
