//! A spinning thread team for the many short parallel regions of inference.
//!
//! Decoding one token of a small model runs about four parallel regions per layer (q/k/v,
//! output, gate/up, down), each only tens of microseconds of work; a prefill runs a dozen per
//! layer (norms, products, rope, attention, SwiGLU), each well under a millisecond. Rayon
//! parks idle workers, and waking one costs a futex round trip per region, a large share of
//! such a region (SmolLM2 F16 prefill: 398 tok/s on rayon, 465 on the team). The
//! team instead keeps `threads - 1` workers spinning for a short while after each region
//! (then they sleep on a condition variable), so the next region starts within a cache-line
//! round trip. Work is handed out by an atomic counter; every item's result depends only on
//! the item, so the output does not depend on which thread ran what.
//!
//! The team is used only from outside rayon's pool and by one caller at a time (a
//! `try_lock`); anything else falls back to rayon, so it is always safe to call.

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a worker spins for the next region before it sleeps: longer than the gap
/// between two regions of one token (norms, attention) and than sampling between tokens.
const SPIN: Duration = Duration::from_micros(300);

/// One region: a type-erased `Fn(usize)` over item indices, claimed through `next`.
struct Job {
    call: unsafe fn(*const (), usize),
    data: *const (),
    items: usize,
}

struct Shared {
    /// Bumped once per region; a worker runs a region when it sees a new value.
    epoch: AtomicUsize,
    /// Next unclaimed item of the current region.
    next: AtomicUsize,
    /// Workers still inside the current region.
    busy: AtomicUsize,
    /// Set when an item of the current region panicked on a worker.
    panicked: AtomicBool,
    job: Mutex<Option<JobPtr>>,
    wake: Condvar,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointer is only dereferenced while the caller of `for_each_index` keeps the Job
// alive (it waits for `busy == 0` before returning), and the job's closure is `Sync`.
unsafe impl Send for JobPtr {}

pub struct Team {
    shared: Arc<Shared>,
    threads: usize,
    /// Worker threads actually running (`threads - 1` unless a spawn failed).
    workers: usize,
    caller: Mutex<()>,
}

impl Team {
    fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            job: Mutex::new(None),
            wake: Condvar::new(),
        });
        let mut workers = 0;
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("nf-team-{i}"))
                .spawn(move || worker(&s));
            if spawned.is_err() {
                // Fewer workers only means less parallelism: the caller claims what is left.
                break;
            }
            workers += 1;
        }
        Team {
            shared,
            threads,
            workers,
            caller: Mutex::new(()),
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen {
            spins += 1;
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            // Let other runnable threads of a busy machine have this core meanwhile.
            std::thread::yield_now();
            if start.elapsed() > SPIN {
                let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
                while s.epoch.load(Ordering::Acquire) == seen {
                    job = s.wake.wait(job).unwrap_or_else(|e| e.into_inner());
                }
                break;
            }
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(job)) = job {
            // SAFETY: the caller keeps the Job alive until `busy` drops to 0 (below).
            let job = unsafe { &*job };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_items(s, job)));
            if ok.is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run_items(s: &Shared, job: &Job) {
    loop {
        let i = s.next.fetch_add(1, Ordering::AcqRel);
        if i >= job.items {
            return;
        }
        // SAFETY: `data` is the caller's live closure of the type `call` was made for.
        unsafe { (job.call)(job.data, i) }
    }
}

unsafe fn call_closure<F: Fn(usize) + Sync>(data: *const (), i: usize) {
    // SAFETY: `data` was made from `&F` in `for_each_index` and outlives the region.
    let f = unsafe { &*(data as *const F) };
    f(i)
}

/// The process's team for the current rayon thread count (made on first use).
/// `NEURALFORGE_TEAM=0` turns the team off (rayon everywhere), for comparisons.
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Team> = OnceLock::new();
    static OFF: OnceLock<bool> = OnceLock::new();
    if *OFF.get_or_init(|| std::env::var_os("NEURALFORGE_TEAM").is_some_and(|v| v == "0")) {
        return None;
    }
    let threads = rayon::current_num_threads();
    let t = TEAM.get_or_init(|| Team::new(threads));
    (t.threads == threads).then_some(t)
}

/// Calls `f(i)` for every `i` in `0..items`, in parallel over the engine's threads.
pub fn for_each_index<F: Fn(usize) + Sync>(items: usize, f: F) {
    if items <= 1 || rayon::current_num_threads() <= 1 {
        (0..items).for_each(f);
        return;
    }
    let team = if rayon::current_thread_index().is_none() {
        team()
    } else {
        None
    };
    let guard = team.and_then(|t| t.caller.try_lock().ok().map(|g| (t, g)));
    let Some((team, _guard)) = guard else {
        (0..items).into_par_iter().for_each(&f);
        return;
    };
    let s = &*team.shared;
    let job = Job {
        call: call_closure::<F>,
        data: &f as *const F as *const (),
        items,
    };
    s.next.store(0, Ordering::Release);
    s.busy.store(team.workers, Ordering::Release);
    s.panicked.store(false, Ordering::Release);
    {
        let mut slot = s.job.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(JobPtr(&job));
        s.epoch.fetch_add(1, Ordering::AcqRel);
        s.wake.notify_all();
    }
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_items(s, &job)));
    let mut spins = 0u32;
    while s.busy.load(Ordering::Acquire) > 0 {
        spins += 1;
        if spins.is_multiple_of(64) {
            // A worker preempted inside an item: give the core to it (or others) meanwhile.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    if s.panicked.load(Ordering::Acquire) {
        panic!("a team worker panicked");
    }
}

/// Calls `f` on every element of `items` (each exactly once), in parallel.
pub fn for_each_mut<T: Send, F: Fn(&mut T) + Sync>(items: &mut [T], f: F) {
    let base = SendPtr(items.as_mut_ptr());
    let n = items.len();
    for_each_index(n, |i| {
        let base = &base;
        assert!(i < n);
        // SAFETY: every index in 0..n is handed out exactly once (an atomic counter), so the
        // `&mut` borrows are disjoint; `items` stays borrowed until the region ends.
        f(unsafe { &mut *base.0.add(i) })
    });
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand out disjoint elements of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_exactly_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let mut v = vec![0u32; n];
            for_each_mut(&mut v, |x| *x += 1);
            assert!(v.iter().all(|&x| x == 1), "n = {n}");
        }
    }

    #[test]
    fn many_regions_in_a_row_and_from_several_callers() {
        let handles: Vec<_> = (0..3)
            .map(|t| {
                std::thread::spawn(move || {
                    for r in 0..200 {
                        let mut v = vec![0usize; 64];
                        for_each_mut(&mut v, |x| *x = r + t);
                        assert!(v.iter().all(|&x| x == r + t));
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
    }

    #[test]
    fn a_panicking_item_reaches_the_caller_and_the_team_keeps_working() {
        let r = std::panic::catch_unwind(|| {
            for_each_index(64, |i| {
                if i == 40 {
                    panic!("item 40");
                }
            })
        });
        assert!(r.is_err());
        let mut v = vec![0u8; 64];
        for_each_mut(&mut v, |x| *x = 7);
        assert!(v.iter().all(|&x| x == 7));
    }
}
