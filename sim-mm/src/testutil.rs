//! A single-task Platform for unit tests: every primitive completes at once; a lock that is
//! already held, or a sleep nobody can end, is a test failure (there is no other task). Reports
//! are recorded per OS thread for the test to inspect.

use sim_core::platform::{Assertion, WaiterId, WakeFn};
use sim_core::{LockClass, Platform, TaskId, WaitKey, WakeMode};
use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll, Waker};

#[derive(Clone, Copy, Default)]
pub struct TestPlatform;

thread_local! {
    static REPORTS: RefCell<Vec<Assertion>> = const { RefCell::new(Vec::new()) };
    static CURRENT: RefCell<u32> = const { RefCell::new(0) };
}

/// The assertions reported so far on this thread (and forget them).
pub fn take_reports() -> Vec<Assertion> {
    REPORTS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// Make `t` the current task for what follows.
pub fn set_current(t: u32) {
    CURRENT.with(|c| *c.borrow_mut() = t);
}

pub struct Waiters {
    list: Mutex<Vec<(u32, WaitKey, bool, WakeFn, bool)>>,
    next: Mutex<u32>,
}

impl Platform for TestPlatform {
    type RawLock = AtomicBool;
    type RawRwSem = AtomicI64;
    type RawWaitQueue = Waiters;

    fn new_lock(&self, _class: LockClass, _name: &'static str) -> AtomicBool {
        AtomicBool::new(false)
    }
    async fn lock(&self, l: &AtomicBool) {
        assert!(!l.swap(true, Ordering::SeqCst), "lock already held: self-deadlock");
    }
    async fn try_lock(&self, l: &AtomicBool) -> bool {
        !l.swap(true, Ordering::SeqCst)
    }
    async fn unlock(&self, l: &AtomicBool) {
        assert!(l.swap(false, Ordering::SeqCst), "unlock of a free lock");
    }
    fn unlock_now(&self, l: &AtomicBool) {
        assert!(l.swap(false, Ordering::SeqCst), "unlock of a free lock");
    }
    fn new_rwsem(&self, _name: &'static str) -> AtomicI64 {
        AtomicI64::new(0)
    }
    async fn down_read(&self, s: &AtomicI64) {
        assert!(s.load(Ordering::SeqCst) >= 0, "rwsem held for write");
        s.fetch_add(1, Ordering::SeqCst);
    }
    async fn up_read(&self, s: &AtomicI64) {
        s.fetch_sub(1, Ordering::SeqCst);
    }
    async fn down_write(&self, s: &AtomicI64) {
        assert_eq!(s.swap(-1, Ordering::SeqCst), 0, "rwsem busy");
    }
    async fn up_write(&self, s: &AtomicI64) {
        s.store(0, Ordering::SeqCst);
    }
    async fn downgrade_write(&self, s: &AtomicI64) {
        s.store(1, Ordering::SeqCst);
    }
    fn up_now(&self, s: &AtomicI64, write: bool) {
        if write {
            s.store(0, Ordering::SeqCst);
        } else {
            s.fetch_sub(1, Ordering::SeqCst);
        }
    }
    fn new_waitqueue(&self, _name: &'static str) -> Waiters {
        Waiters {
            list: Mutex::new(vec![]),
            next: Mutex::new(0),
        }
    }
    async fn prepare_to_wait(
        &self,
        wq: &Waiters,
        key: WaitKey,
        exclusive: bool,
        func: WakeFn,
    ) -> WaiterId {
        let mut n = wq.next.lock().unwrap();
        *n += 1;
        wq.list
            .lock()
            .unwrap()
            .push((*n, key, exclusive, func, false));
        WaiterId(*n)
    }
    async fn schedule(&self, wq: &Waiters, w: WaiterId) {
        let l = wq.list.lock().unwrap();
        let woken = l.iter().find(|x| x.0 == w.0).is_none_or(|x| x.4);
        assert!(woken, "single-task test would sleep forever");
    }
    async fn finish_wait(&self, wq: &Waiters, w: WaiterId) {
        wq.list.lock().unwrap().retain(|x| x.0 != w.0);
    }
    async fn wake_up(&self, wq: &Waiters, key: WaitKey, mode: WakeMode) -> usize {
        let mut l = wq.list.lock().unwrap();
        let mut n = 0;
        for x in l.iter_mut() {
            if !x.4 && (x.3)(&x.1, &key) {
                x.4 = true;
                n += 1;
                if x.2 && mode == WakeMode::Next {
                    break;
                }
            }
        }
        n
    }
    async fn waitqueue_active(&self, wq: &Waiters) -> bool {
        !wq.list.lock().unwrap().is_empty()
    }
    async fn yield_point(&self, _site: &'static str) {}
    fn now_ns(&self) -> u64 {
        0
    }
    async fn sleep_ns(&self, _ns: u64) {}
    fn random_u64(&self) -> u64 {
        4
    }
    fn current_task(&self) -> TaskId {
        TaskId(CURRENT.with(|c| *c.borrow()))
    }
    async fn report(&self, a: Assertion) {
        REPORTS.with(|r| r.borrow_mut().push(a));
    }
    fn set_line(&self, _line: u32) {}
}

/// Drive a single-task future to completion.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete in a single-task test");
}
