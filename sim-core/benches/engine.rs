//! `cargo bench -p sim-core --bench engine`: the event queue's events/s, and schedules/s of
//! pmsim on the five toy models beside shuttle and loom running the same models in the same
//! process (ratios, medians of 3). Environment: `BENCH_ITERS` (default 100000),
//! `BENCH_SHUTTLE_DFS_SECS` (cap for shuttle's DFS on lw3x4, default 10).

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

fn shuttle_run(name: &str, sched: &str, iters: u64, seed: u64) -> f64 {
    let f = shuttle_models::by_name(name);
    let t = Instant::now();
    let n = iters as usize;
    let _ = match sched {
        "random" => shuttle::Runner::new(
            shuttle::scheduler::RandomScheduler::new_from_seed(seed, n),
            shuttle_config(None),
        )
        .run(f),
        "pct2" | "pct3" => {
            let d = if sched == "pct2" { 2 } else { 3 };
            shuttle::Runner::new(
                shuttle::scheduler::PctScheduler::new_from_seed(seed, d, n),
                shuttle_config(None),
            )
            .run(f)
        }
        _ => unreachable!(),
    };
    t.elapsed().as_secs_f64()
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

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args; keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let iters = env_u64("BENCH_ITERS", 100_000);
    let dfs_cap = env_u64("BENCH_SHUTTLE_DFS_SECS", 10);
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
        "shuttle 0.9 and loom 0.7 run the same models in this process; pmsim's models have no main thread (shuttle's and loom's spawn and join from one)."
    );
    println!();

    let eq: Vec<f64> = (0..3).map(|_| event_queue_bench()).collect();
    println!(
        "event queue: {:.1} M events/s (median of 3; target >= 20 M/s)",
        median(eq) / 1e6
    );
    println!();

    println!("throughput on correct models, {iters} schedules per run, median of 3 (seeds 1..3):");
    println!("| model | strategy | pmsim schedules/s | shuttle schedules/s | ratio |");
    println!("|---|---|---|---|---|");
    for name in ["abba-fixed", "lost-wakeup-correct", "lw3x4"] {
        for sched in ["random", "pct2", "pct3"] {
            let strategy = match sched {
                "random" => Strategy::Random,
                "pct2" => Strategy::Pct { depth: 2 },
                _ => Strategy::Pct { depth: 3 },
            };
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for seed in 1..=3 {
                let (runs, secs, _, failed) = pmsim(name, strategy.clone(), Some(iters), seed);
                assert!(!failed, "{name} must not fail");
                ours.push(runs as f64 / secs);
                theirs.push(iters as f64 / shuttle_run(name, sched, iters, seed));
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

    println!("exhaustive search (pmsim dfs: sleep sets, no preemption bound):");
    println!("| model | pmsim dfs | shuttle dfs | loom |");
    println!("|---|---|---|---|");
    for name in ["abba-fixed", "lost-wakeup-correct", "lw3x4"] {
        let (runs, secs, exhausted, failed) = pmsim(
            name,
            Strategy::Dfs {
                preemption_bound: None,
            },
            None,
            0,
        );
        assert!(exhausted && !failed);
        let ours = format!(
            "exhausted: {runs} schedules in {:.3} s ({:.0}k/s)",
            secs,
            runs as f64 / secs / 1e3
        );
        let cap = Duration::from_secs(dfs_cap);
        let f = shuttle_models::by_name(name);
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c2 = counter.clone();
        let t = Instant::now();
        let _ = shuttle::Runner::new(
            shuttle::scheduler::DfsScheduler::new(None, false),
            shuttle_config(Some(cap)),
        )
        .run(move || {
            c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f()
        });
        let st = t.elapsed().as_secs_f64();
        let sn = counter.load(std::sync::atomic::Ordering::Relaxed);
        let theirs = if st >= cap.as_secs_f64() {
            format!("NOT exhausted in {dfs_cap} s ({sn} schedules)")
        } else {
            format!("exhausted: {sn} schedules in {st:.3} s")
        };
        let loom_s = {
            let f = loom_models::by_name(name);
            let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let c2 = counter.clone();
            let mut b = loom::model::Builder::new();
            let bound = if name == "lw3x4" { Some(2) } else { None };
            b.preemption_bound = bound;
            let t = Instant::now();
            b.check(move || {
                c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                f()
            });
            format!(
                "exhausted{}: {} schedules in {:.3} s",
                bound
                    .map(|b| format!(" (preemption bound {b}; unbounded does not finish in 120 s)"))
                    .unwrap_or_default(),
                counter.load(std::sync::atomic::Ordering::Relaxed),
                t.elapsed().as_secs_f64()
            )
        };
        println!("| {name} | {ours} | {theirs} | {loom_s} |");
    }
    println!();

    println!("time to the abba deadlock, median over seeds 1..20:");
    println!("| strategy | pmsim runs | pmsim time | shuttle runs | shuttle time |");
    println!("|---|---|---|---|---|");
    for sched in ["random", "pct2", "pct3"] {
        let strategy = match sched {
            "random" => Strategy::Random,
            "pct2" => Strategy::Pct { depth: 2 },
            _ => Strategy::Pct { depth: 3 },
        };
        let (mut or, mut ot, mut sr, mut stt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seed in 1..=20u64 {
            let cfg = ExploreConfig {
                strategy: strategy.clone(),
                seed,
                runs: Some(100_000),
                ..ExploreConfig::default()
            };
            let t = Instant::now();
            let r = explore(&toy_model("abba"), &cfg, &mut |_| {}).expect("explore");
            ot.push(t.elapsed().as_secs_f64() * 1e6);
            or.push(r.failure.map(|f| f.run + 1).unwrap_or(u64::MAX) as f64);
            let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let c2 = counter.clone();
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let t = Instant::now();
            let _ = std::panic::catch_unwind(|| {
                let f = move || {
                    c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    shuttle_models::abba(false)
                };
                match sched {
                    "random" => shuttle::Runner::new(
                        shuttle::scheduler::RandomScheduler::new_from_seed(seed, 100_000),
                        shuttle_config(None),
                    )
                    .run(f),
                    _ => shuttle::Runner::new(
                        shuttle::scheduler::PctScheduler::new_from_seed(
                            seed,
                            if sched == "pct2" { 2 } else { 3 },
                            100_000,
                        ),
                        shuttle_config(None),
                    )
                    .run(f),
                }
            });
            stt.push(t.elapsed().as_secs_f64() * 1e6);
            std::panic::set_hook(prev);
            sr.push(counter.load(std::sync::atomic::Ordering::Relaxed) as f64);
        }
        println!(
            "| {sched} | {:.1} | {:.0} us | {:.1} | {:.0} us |",
            median(or),
            median(ot),
            median(sr),
            median(stt)
        );
    }
}
