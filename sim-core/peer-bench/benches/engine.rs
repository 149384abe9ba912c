//! `cargo bench -p pmsim-peer-bench --bench engine`: the event queue's events/s, and pmsim on
//! all five toy models beside shuttle and loom running the same models in the same process:
//! schedules/s on the three correct models (medians of 3), exhaustive search of the correct
//! models (pmsim dfs, shuttle dfs, loom at preemption bounds 2 and 3, each measured with a time
//! cap, never assumed), and the time to the first failure on the two buggy ones.
//!
//! Environment: `BENCH_ITERS` (default 100000), `BENCH_DFS_SECS` (cap for shuttle's DFS and for
//! each loom run, default 10). Loom cannot be stopped from inside, so each loom run is this
//! binary re-executed in a child process (`PEER_BENCH_LOOM=MODEL:BOUND`) and killed at the cap.
//! Shuttle's own output for a failing run (the panic and the schedule) goes to /dev/null.

use sim_core::events::{EventKind, EventQueue};
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

/// pmsim: (runs, seconds, exhausted, failed)
fn pmsim(
    name: &'static str,
    strategy: Strategy,
    runs: Option<u64>,
    seed: u64,
) -> (u64, f64, bool, bool) {
    let cfg = ExploreConfig {
        strategy,
        seed,
        runs,
        ..ExploreConfig::default()
    };
    let t = Instant::now();
    let r = explore(&toy_model(name), &cfg, &mut |_| {}).expect("explore");
    (
        r.runs,
        t.elapsed().as_secs_f64(),
        r.exhausted,
        r.failure.is_some(),
    )
}

fn event_queue_bench() -> f64 {
    let mut q = EventQueue::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..1024u64 {
        q.push(i * 7, EventKind::TimerExpired(TaskId(i as u32)));
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

/// Shuttle on `f` with one scheduler: (schedules started, seconds). A failing model panics
/// out of shuttle at its first failure; the panic is caught.
fn shuttle_count(
    f: impl Fn() + Send + Sync + 'static,
    sched: &str,
    iters: u64,
    seed: u64,
    cap: Option<Duration>,
) -> (u64, f64) {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = counter.clone();
    let g = move || {
        c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    };
    let n = iters as usize;
    let t = Instant::now();
    quietly(|| {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match sched {
            "random" => shuttle::Runner::new(
                shuttle::scheduler::RandomScheduler::new_from_seed(seed, n),
                shuttle_config(cap),
            )
            .run(g),
            "pct2" | "pct3" => shuttle::Runner::new(
                shuttle::scheduler::PctScheduler::new_from_seed(
                    seed,
                    if sched == "pct2" { 2 } else { 3 },
                    n,
                ),
                shuttle_config(cap),
            )
            .run(g),
            _ => shuttle::Runner::new(
                shuttle::scheduler::DfsScheduler::new(None, false),
                shuttle_config(cap),
            )
            .run(g),
        }));
    });
    (
        counter.load(std::sync::atomic::Ordering::Relaxed),
        t.elapsed().as_secs_f64(),
    )
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
    b.check(move || {
        c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    println!(
        "{} {}",
        counter.load(std::sync::atomic::Ordering::Relaxed),
        t.elapsed().as_secs_f64()
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
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t.elapsed() < cap => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("bound {bound}: did not finish in {} s", cap.as_secs());
            }
        }
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    let mut it = out.split_whitespace();
    match (
        it.next().and_then(|x| x.parse::<u64>().ok()),
        it.next().and_then(|x| x.parse::<f64>().ok()),
    ) {
        (Some(n), Some(secs)) => format!("bound {bound}: exhausted, {n} schedules in {secs:.3} s"),
        _ => format!("bound {bound}: failed"),
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
        "shuttle 0.9 and loom 0.7 run the same models in this process; pmsim's models have no \
         main thread (shuttle's and loom's spawn and join from one), so their schedule spaces \
         differ and the ratios are per schedule."
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

    println!(
        "throughput on the correct models, {iters} schedules per run, median of 3 (seeds 1..3):"
    );
    println!("| model | strategy | pmsim schedules/s | shuttle schedules/s | ratio |");
    println!("|---|---|---|---|---|");
    for name in correct {
        for sched in ["random", "pct2", "pct3"] {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for seed in 1..=3 {
                let (runs, secs, _, failed) = pmsim(name, strategy_of(sched), Some(iters), seed);
                assert!(!failed, "{name} must not fail");
                ours.push(runs as f64 / secs);
                let (n, secs) =
                    shuttle_count(shuttle_models::by_name(name), sched, iters, seed, None);
                theirs.push(n as f64 / secs);
            }
            let (o, t) = (median(ours), median(theirs));
            println!(
                "| {name} | {sched} | {:.0}k | {:.0}k | {:.2}x |",
                o / 1e3,
                t / 1e3,
                o / t
            );
        }
    }
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
                let r = explore(&toy_model(name), &cfg, &mut |_| {}).expect("explore");
                ot.push(t.elapsed().as_secs_f64() * 1e6);
                or.push(r.failure.map(|f| f.run + 1).unwrap_or(u64::MAX) as f64);
                let (n, secs) = shuttle_count(
                    shuttle_models::by_name(name),
                    sched,
                    100_000,
                    seed,
                    Some(cap),
                );
                sr.push(n as f64);
                stt.push(secs * 1e6);
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
        "exhaustive search of the correct models (pmsim dfs: sleep sets, no preemption bound; \
         shuttle dfs unbounded; loom at preemption bounds 2 and 3; cap {} s each):",
        cap.as_secs()
    );
    println!("| model | pmsim dfs | shuttle dfs | loom |");
    println!("|---|---|---|---|");
    for name in correct {
        let (runs, secs, exhausted, failed) = pmsim(name, strategy_of("dfs"), None, 0);
        assert!(exhausted && !failed);
        let ours = format!(
            "exhausted: {runs} schedules in {:.3} s ({:.0}k/s)",
            secs,
            runs as f64 / secs / 1e3
        );
        let (sn, st) = shuttle_count(shuttle_models::by_name(name), "dfs", 0, 0, Some(cap));
        let theirs = if st >= cap.as_secs_f64() {
            format!("NOT exhausted in {} s ({sn} schedules)", cap.as_secs())
        } else {
            format!("exhausted: {sn} schedules in {st:.3} s")
        };
        let loom = [2, 3].map(|b| loom_measured(name, b, cap)).join("; ");
        println!("| {name} | {ours} | {theirs} | {loom} |");
    }
}
