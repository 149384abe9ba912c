//! The native platform: the same model code on OS threads, with real locks and real keyed wait
//! queues. Each task is a thread driving its future with a trivial `block_on`: every native
//! operation completes (blocking the thread if it must) before it returns, so a future never
//! needs to be woken.
//!
//! This is the only place in pmsim where `std::sync` appears on the model's behalf: it is the
//! implementation of the seam, not a user of it. The memory part (pmem mapping, clwb/sfence)
//! comes with the native backend.

use crate::platform::{
    Assertion, LockClass, Platform, Spawner, TaskId, WaitKey, WaiterId, WakeFn, WakeMode,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Instant;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked; its state is still consistent for our
    // simple flags.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread's park token: the model of `current->state` for wait queues.
struct Token {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Token {
    fn set(&self, v: bool) {
        *locked(&self.woken) = v;
        if v {
            self.cv.notify_all();
        }
    }

    fn wait(&self) {
        let mut g = locked(&self.woken);
        while !*g {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

type Reports = Arc<Mutex<Vec<(String, Assertion)>>>;

thread_local! {
    static TASK: Cell<u32> = const { Cell::new(0) };
    static LINE: Cell<u32> = const { Cell::new(0) };
    static TOKEN: Arc<Token> = Arc::new(Token { woken: Mutex::new(true), cv: Condvar::new() });
    static RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(0));
    static RUNNER: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// What the threads of one [`NativeRunner`] share: every thread started (by the runner or by a
/// task), the reports, the seed and the next task id.
struct Shared {
    threads: Mutex<Vec<JoinHandle<Result<(), String>>>>,
    reports: Reports,
    seed: u64,
    next_id: AtomicU32,
}

/// A task's end, for `join`: set when its thread has run its future (or stopped).
pub struct NativeTask {
    done: Arc<(Mutex<bool>, Condvar)>,
}

static NEXT_WAITER: AtomicU32 = AtomicU32::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The payload of the panic that stops a thread after a fatal assertion.
struct NativeBug;

pub struct NativeLock {
    class: LockClass,
    spin: AtomicBool,
    held: Mutex<bool>,
    cv: Condvar,
}

#[derive(Default)]
struct RwState {
    readers: u32,
    writer: bool,
    waiting_writers: u32,
}

pub struct NativeRwSem {
    st: Mutex<RwState>,
    cv: Condvar,
}

struct NativeWaiter {
    id: u32,
    key: WaitKey,
    exclusive: bool,
    func: WakeFn,
    token: Arc<Token>,
}

pub struct NativeWaitQueue {
    q: Mutex<Vec<NativeWaiter>>,
}

/// The native platform handle.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativePlatform;

impl NativeLock {
    fn acquire(&self) {
        match self.class {
            LockClass::Spin => {
                let mut spins = 0u32;
                while self
                    .spin
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            LockClass::Mutex | LockClass::Bit => {
                let mut g = locked(&self.held);
                while *g {
                    g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                *g = true;
            }
        }
    }

    fn try_acquire(&self) -> bool {
        match self.class {
            LockClass::Spin => self
                .spin
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            LockClass::Mutex | LockClass::Bit => {
                let mut g = locked(&self.held);
                !std::mem::replace(&mut *g, true)
            }
        }
    }

    fn release(&self) {
        match self.class {
            LockClass::Spin => self.spin.store(false, Ordering::Release),
            LockClass::Mutex | LockClass::Bit => {
                *locked(&self.held) = false;
                self.cv.notify_one();
            }
        }
    }
}

impl NativeRwSem {
    fn up(&self, write: bool) {
        let mut g = locked(&self.st);
        if write {
            g.writer = false;
        } else {
            g.readers -= 1;
        }
        drop(g);
        self.cv.notify_all();
    }
}

impl Platform for NativePlatform {
    type RawLock = NativeLock;
    type RawRwSem = NativeRwSem;
    type RawWaitQueue = NativeWaitQueue;
    type RawTask = NativeTask;

    fn new_lock(&self, class: LockClass, _name: &'static str) -> NativeLock {
        NativeLock {
            class,
            spin: AtomicBool::new(false),
            held: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    async fn lock(&self, l: &NativeLock) {
        l.acquire()
    }

    async fn try_lock(&self, l: &NativeLock) -> bool {
        l.try_acquire()
    }

    async fn unlock(&self, l: &NativeLock) {
        l.release()
    }

    fn unlock_now(&self, l: &NativeLock) {
        l.release()
    }

    // Natively a peek is a try-lock: `None` when another thread holds the lock.
    fn peek_lock<R>(&self, l: &NativeLock, f: impl FnOnce() -> R) -> Option<R> {
        if !l.try_acquire() {
            return None;
        }
        let r = f();
        l.release();
        Some(r)
    }

    async fn read_once<R>(&self, l: &NativeLock, f: impl FnOnce() -> R) -> R {
        l.acquire();
        let r = f();
        l.release();
        r
    }

    fn new_rwsem(&self, _name: &'static str) -> NativeRwSem {
        NativeRwSem {
            st: Mutex::new(RwState::default()),
            cv: Condvar::new(),
        }
    }

    async fn down_read(&self, s: &NativeRwSem) {
        let mut g = locked(&s.st);
        // Writer-preferring: readers queue behind a waiting writer.
        while g.writer || g.waiting_writers > 0 {
            g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.readers += 1;
    }

    async fn up_read(&self, s: &NativeRwSem) {
        s.up(false)
    }

    // As the simulator's: the attempt takes a free semaphore no writer queued for; otherwise
    // the writer queues, and from then on (not before) new readers wait behind it.
    async fn down_write(&self, s: &NativeRwSem) {
        let mut g = locked(&s.st);
        if !g.writer && g.readers == 0 && g.waiting_writers == 0 {
            g.writer = true;
            return;
        }
        g.waiting_writers += 1;
        while g.writer || g.readers > 0 {
            g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.waiting_writers -= 1;
        g.writer = true;
    }

    async fn up_write(&self, s: &NativeRwSem) {
        s.up(true)
    }

    async fn downgrade_write(&self, s: &NativeRwSem) {
        let mut g = locked(&s.st);
        g.writer = false;
        g.readers += 1;
        drop(g);
        s.cv.notify_all();
    }

    fn up_now(&self, s: &NativeRwSem, write: bool) {
        s.up(write)
    }

    // A try-down_read: `None` while a writer holds the semaphore or waits for it.
    fn peek_rwsem<R>(&self, s: &NativeRwSem, f: impl FnOnce() -> R) -> Option<R> {
        {
            let mut g = locked(&s.st);
            if g.writer || g.waiting_writers > 0 {
                return None;
            }
            g.readers += 1;
        }
        let r = f();
        s.up(false);
        Some(r)
    }

    fn new_waitqueue(&self, _name: &'static str) -> NativeWaitQueue {
        NativeWaitQueue {
            q: Mutex::new(Vec::new()),
        }
    }

    async fn prepare_to_wait(
        &self,
        wq: &NativeWaitQueue,
        key: WaitKey,
        exclusive: bool,
        func: WakeFn,
    ) -> WaiterId {
        let token = TOKEN.with(|t| t.clone());
        token.set(false);
        let id = NEXT_WAITER.fetch_add(1, Ordering::Relaxed);
        let w = NativeWaiter {
            id,
            key,
            exclusive,
            func,
            token,
        };
        let mut q = locked(&wq.q);
        if exclusive {
            q.push(w);
        } else {
            q.insert(0, w);
        }
        WaiterId(id)
    }

    async fn schedule(&self, _wq: &NativeWaitQueue, _w: WaiterId) {
        TOKEN.with(|t| t.clone()).wait();
    }

    async fn finish_wait(&self, wq: &NativeWaitQueue, w: WaiterId) {
        locked(&wq.q).retain(|x| x.id != w.0);
        TOKEN.with(|t| t.set(true));
    }

    async fn wake_up(&self, wq: &NativeWaitQueue, key: WaitKey, mode: WakeMode) -> usize {
        let mut q = locked(&wq.q);
        let mut woken = 0;
        let mut i = 0;
        while i < q.len() {
            let w = &q[i];
            if (w.func)(&w.key, &key) {
                let w = q.remove(i);
                w.token.set(true);
                woken += 1;
                if w.exclusive && mode == WakeMode::Next {
                    break;
                }
            } else {
                i += 1;
            }
        }
        woken
    }

    async fn waitqueue_active(&self, wq: &NativeWaitQueue) -> bool {
        !locked(&wq.q).is_empty()
    }

    async fn yield_point(&self, _site: &'static str) {
        std::thread::yield_now();
    }

    fn now_ns(&self) -> u64 {
        epoch().elapsed().as_nanos() as u64
    }

    async fn sleep_ns(&self, ns: u64) {
        std::thread::sleep(std::time::Duration::from_nanos(ns));
    }

    fn random_u64(&self) -> u64 {
        RNG.with(|r| r.borrow_mut().next_u64())
    }

    fn current_task(&self) -> TaskId {
        TaskId(TASK.with(|t| t.get()))
    }

    async fn report(&self, a: Assertion) {
        let task = std::thread::current().name().unwrap_or("?").to_string();
        let fatal = a.fatal;
        RUNNER.with(|r| {
            if let Some(r) = r.borrow().as_ref() {
                locked(&r.reports).push((task, a));
            }
        });
        if fatal {
            std::panic::panic_any(NativeBug);
        }
    }

    fn set_line(&self, line: u32) {
        LINE.with(|l| l.set(line));
    }

    async fn spawn<F, Fut>(&self, name: &str, f: F) -> NativeTask
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let shared = RUNNER
            .with(|r| r.borrow().clone())
            .expect("Platform::spawn on a thread that no NativeRunner started");
        start_thread(&shared, name, f)
    }

    async fn join(&self, t: &NativeTask) {
        let (m, cv) = &*t.done;
        let mut g = locked(m);
        while !*g {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Start task `name` on its own thread of the runner `shared`.
fn start_thread<F, Fut>(shared: &Arc<Shared>, name: &str, f: F) -> NativeTask
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let seed = shared.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let (sh, d) = (shared.clone(), done.clone());
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            TASK.with(|t| t.set(id));
            RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
            RUNNER.with(|r| *r.borrow_mut() = Some(sh));
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on(f())));
            // The end a join waits for (also after a BUG or a panic).
            *locked(&d.0) = true;
            d.1.notify_all();
            RUNNER.with(|r| *r.borrow_mut() = None);
            match res {
                Ok(()) => Ok(()),
                Err(p) if p.is::<NativeBug>() => Ok(()),
                Err(p) => Err(p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into())),
            }
        });
    match handle {
        Ok(h) => locked(&shared.threads).push(h),
        Err(e) => {
            *locked(&done.0) = true;
            locked(&shared.reports).push((
                name.to_string(),
                Assertion {
                    fatal: true,
                    name: "spawn-failed".into(),
                    message: format!("could not start a thread: {e}"),
                },
            ));
        }
    }
    NativeTask { done }
}

/// Drive a future whose every await completes at once (all native operations block instead of
/// returning `Pending`).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            // Only a future that is not a Platform operation can be pending here.
            Poll::Pending => std::thread::yield_now(),
        }
    }
}

/// Spawns each task on its own OS thread; `join` waits for all of them, including the tasks
/// that tasks started.
pub struct NativeRunner {
    shared: Arc<Shared>,
}

/// How a native run ended.
#[derive(Debug, Default)]
pub struct NativeOutcome {
    /// BUG/WARN reports, with the thread name.
    pub reports: Vec<(String, Assertion)>,
    /// Threads that panicked for another reason, with the message.
    pub panics: Vec<String>,
}

impl NativeOutcome {
    pub fn is_clean(&self) -> bool {
        self.reports.is_empty() && self.panics.is_empty()
    }
}

impl NativeRunner {
    pub fn new(seed: u64) -> Self {
        NativeRunner {
            shared: Arc::new(Shared {
                threads: Mutex::new(Vec::new()),
                reports: Arc::new(Mutex::new(Vec::new())),
                seed,
                next_id: AtomicU32::new(0),
            }),
        }
    }

    pub fn platform(&self) -> NativePlatform {
        NativePlatform
    }

    pub fn join(self) -> NativeOutcome {
        let mut out = NativeOutcome::default();
        // A thread is registered before it runs, so a task's children are registered before
        // the task's own thread ends: pop until nothing is left.
        loop {
            // Not held while joining: the thread may still register children.
            let next = locked(&self.shared.threads).pop();
            let Some(t) = next else { break };
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => out.panics.push(msg),
                Err(_) => out.panics.push("thread could not be joined".into()),
            }
        }
        out.reports = std::mem::take(&mut *locked(&self.shared.reports));
        out
    }
}

impl Spawner<NativePlatform> for NativeRunner {
    fn spawn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        start_thread(&self.shared, name, f);
    }
}
