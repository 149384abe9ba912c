//! Toy models written against the Platform API: the five models of the shuttle/loom anchor
//! (abba, abba-fixed, lost-wakeup, lost-wakeup-correct, lw3x4) and a deliberately
//! nondeterministic one. They exercise the engine (tests, benchmarks, `pmsim bench engine`) and
//! run unchanged on the native platform.
//!
//! Each toy comes in two shapes: `NAME`, whose workers are the model's tasks (the objects are
//! built in the setup), and `NAME-main` ([`TOYS_MAIN`]), the shape of the shuttle and loom
//! versions: one task `main` builds the objects, spawns the workers and joins them.

use crate::platform::{Mutex, Platform, Spawner, WaitKey, WaitQueue, WakeMode, bug_on, spawn};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The toy models by name.
pub const TOYS: [&str; 5] = [
    "abba",
    "abba-fixed",
    "lost-wakeup",
    "lost-wakeup-correct",
    "lw3x4",
];

/// The toys in the shape of the shuttle and loom versions: a `main` task spawns the workers
/// and joins them.
pub const TOYS_MAIN: [&str; 5] = [
    "abba-main",
    "abba-fixed-main",
    "lost-wakeup-main",
    "lost-wakeup-correct-main",
    "lw3x4-main",
];

/// One worker of a toy: its name and the code that builds its future.
type Worker = (
    String,
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>,
);

/// The workers of toy `name` (building its objects on `p`); `None` for an unknown name.
fn workers<P: Platform>(name: &str, p: &P) -> Option<Vec<Worker>> {
    let mut w = Workers(Vec::new());
    match name {
        "abba" => abba(p, &mut w, false),
        "abba-fixed" => abba(p, &mut w, true),
        "lost-wakeup" => lost_wakeup(p, &mut w, false),
        "lost-wakeup-correct" => lost_wakeup(p, &mut w, true),
        "lw3x4" => lw3x4(p, &mut w),
        "nondeterministic" => nondeterministic(p, &mut w),
        _ => return None,
    }
    Some(w.0)
}

/// Collects a toy's workers instead of starting them.
struct Workers(Vec<Worker>);

impl<P: Platform> Spawner<P> for Workers {
    fn spawn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.0
            .push((name.to_string(), Box::new(move || Box::pin(f()))));
    }
}

/// Build toy `name` (one of [`TOYS`], [`TOYS_MAIN`] or `nondeterministic`) on platform `p`;
/// false for an unknown name.
pub fn build<P: Platform>(name: &str, p: &P, s: &mut impl Spawner<P>) -> bool {
    if let Some(base) = name.strip_suffix("-main") {
        if !TOYS.contains(&base) {
            return false;
        }
        let (base, p) = (base.to_string(), p.clone());
        s.spawn("main", move || async move {
            let ws = workers(&base, &p).expect("checked above");
            let mut handles = Vec::with_capacity(ws.len());
            for (name, f) in ws {
                handles.push(spawn(&p, &name, f).await);
            }
            for h in handles {
                h.join(&p).await;
            }
        });
        return true;
    }
    let Some(ws) = workers(name, p) else {
        return false;
    };
    for (name, f) in ws {
        s.spawn(&name, f);
    }
    true
}

/// Two tasks take locks A and B; unless `fixed`, the second takes them in the other order.
pub fn abba<P: Platform>(p: &P, s: &mut impl Spawner<P>, fixed: bool) {
    let a = Arc::new(Mutex::new(p, "A", 0u64));
    let b = Arc::new(Mutex::new(p, "B", 0u64));
    for (name, a_first) in [("t1", true), ("t2", fixed)] {
        let (a, b, p) = (a.clone(), b.clone(), p.clone());
        s.spawn(name, move || async move {
            let (x, y) = if a_first { (&a, &b) } else { (&b, &a) };
            let mut gx = x.lock(&p).await;
            let mut gy = y.lock(&p).await;
            *gx += 1;
            *gy += 1;
            gy.unlock().await;
            gx.unlock().await;
        });
    }
}

/// The waiter sleeps on key 1 until a flag is set; the waker sets the flag and wakes key 2
/// (the bug: a wake-up keyed on another value, as in the 2019 PMD missed wakeup) or key 1.
pub fn lost_wakeup<P: Platform>(p: &P, s: &mut impl Spawner<P>, correct: bool) {
    let flag = Arc::new(Mutex::new(p, "M", false));
    let wq = Arc::new(WaitQueue::new(p, "wq"));
    {
        let (flag, wq, p) = (flag.clone(), wq.clone(), p.clone());
        s.spawn("waiter", move || async move {
            let mut g = flag.lock(&p).await;
            while !*g {
                g = wq.wait_unlocking(&p, g, WaitKey(0, 1), true).await;
            }
            g.unlock().await;
        });
    }
    let p = p.clone();
    s.spawn("waker", move || async move {
        let mut g = flag.lock(&p).await;
        *g = true;
        g.unlock().await;
        let key = WaitKey(0, if correct { 1 } else { 2 });
        wq.wake_up(&p, key, WakeMode::Next).await;
    });
}

/// Three workers, one mutex and one wait queue, four lock acquisitions each: the waiter counts
/// three times, then waits until both wakers are done; each waker counts three times, marks
/// itself done and wakes one waiter. Correct: the waiter always finds work == 9.
pub fn lw3x4<P: Platform>(p: &P, s: &mut impl Spawner<P>) {
    let st = Arc::new(Mutex::new(p, "M", (0u32, 0u32)));
    let wq = Arc::new(WaitQueue::new(p, "C"));
    const KEY: WaitKey = WaitKey(0, 0);
    {
        let (st, wq, p) = (st.clone(), wq.clone(), p.clone());
        s.spawn("waiter", move || async move {
            for _ in 0..3 {
                let mut g = st.lock(&p).await;
                g.0 += 1;
                g.unlock().await;
            }
            let mut g = st.lock(&p).await;
            while g.1 < 2 {
                g = wq.wait_unlocking(&p, g, KEY, true).await;
            }
            let work = g.0;
            g.unlock().await;
            bug_on(&p, work != 9, "lw3x4-work", || {
                format!("the waiter saw work == {work}, expected 9")
            })
            .await;
        });
    }
    for name in ["waker1", "waker2"] {
        let (st, wq, p) = (st.clone(), wq.clone(), p.clone());
        s.spawn(name, move || async move {
            for _ in 0..3 {
                let mut g = st.lock(&p).await;
                g.0 += 1;
                g.unlock().await;
            }
            let mut g = st.lock(&p).await;
            g.1 += 1;
            g.unlock().await;
            wq.wake_up(&p, KEY, WakeMode::Next).await;
        });
    }
}

static NONDETERMINISM: AtomicU64 = AtomicU64::new(0);

/// A model that breaks the rules on purpose: it reads a process-global counter that bypasses
/// the Platform, so two runs with the same seed differ. `--check-determinism` must catch it.
pub fn nondeterministic<P: Platform>(p: &P, s: &mut impl Spawner<P>) {
    let extra = NONDETERMINISM.fetch_add(1, Ordering::Relaxed) % 2 == 1;
    let m = Arc::new(Mutex::new(p, "M", 0u64));
    for name in ["t1", "t2"] {
        let (m, p) = (m.clone(), p.clone());
        s.spawn(name, move || async move {
            if extra {
                p.yield_point("outside-state").await;
            }
            let mut g = m.lock(&p).await;
            *g += 1;
            g.unlock().await;
        });
    }
}
