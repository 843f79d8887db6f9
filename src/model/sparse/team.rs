//! The sparse kernels' threads: libtorch's own OpenMP team, borrowed through libgomp's
//! `GOMP_parallel` (the entry point compiled `#pragma omp parallel` regions call). Threads of
//! our own would compete for the cores with libgomp's workers, which spin for a while after
//! every libtorch operation; the team's workers are already waiting for exactly this. Where
//! the process has no libgomp (another OpenMP runtime, a static build), work runs on the
//! calling thread. Each part of the work is computed the same way whoever runs it, so the
//! results do not depend on the number of threads.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

type Region = unsafe extern "C" fn(*mut c_void);

/// libgomp's entry points, when the process has them.
struct Gomp {
    parallel: unsafe extern "C" fn(Region, *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
    max_threads: unsafe extern "C" fn() -> c_int,
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT only looks symbols up in the loaded objects; each
        // found symbol has libgomp's documented C signature, transmuted to that type.
        unsafe {
            let find = |name: &std::ffi::CStr| {
                let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            type Query = unsafe extern "C" fn() -> c_int;
            type Parallel = unsafe extern "C" fn(Region, *mut c_void, c_uint, c_uint);
            Some(Gomp {
                parallel: std::mem::transmute::<*mut c_void, Parallel>(find(c"GOMP_parallel")?),
                thread_num: std::mem::transmute::<*mut c_void, Query>(find(c"omp_get_thread_num")?),
                num_threads: std::mem::transmute::<*mut c_void, Query>(find(
                    c"omp_get_num_threads",
                )?),
                max_threads: std::mem::transmute::<*mut c_void, Query>(find(
                    c"omp_get_max_threads",
                )?),
            })
        }
    })
    .as_ref()
}

/// Threads a [`run`] splits work over (1 without libgomp).
pub fn threads() -> usize {
    // SAFETY: omp_get_max_threads takes no arguments and only reads libgomp's settings.
    gomp().map_or(1, |g| unsafe { (g.max_threads)() }.max(1) as usize)
}

/// Calls `work(part, parts)` once for every part in `0..parts`, the parts spread over the
/// team's threads (all on the calling thread when `parts` is 1 or there is no team).
pub fn run(parts: usize, work: &(dyn Fn(usize, usize) + Sync)) {
    let Some(g) = gomp().filter(|_| parts > 1) else {
        (0..parts).for_each(|p| work(p, parts));
        return;
    };
    struct Job<'a> {
        work: &'a (dyn Fn(usize, usize) + Sync),
        parts: usize,
        gomp: &'a Gomp,
        panicked: std::sync::atomic::AtomicBool,
    }
    unsafe extern "C" fn region(data: *mut c_void) {
        // SAFETY: `data` is the `Job` below, alive until GOMP_parallel returns.
        let job = unsafe { &*(data as *const Job<'_>) };
        // SAFETY: called inside a parallel region, as these functions are meant to be.
        let (me, team) = unsafe {
            (
                (job.gomp.thread_num)() as usize,
                (job.gomp.num_threads)() as usize,
            )
        };
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for p in (me..job.parts).step_by(team.max(1)) {
                (job.work)(p, job.parts);
            }
        }));
        if done.is_err() {
            job.panicked
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let job = Job {
        work,
        parts,
        gomp: g,
        panicked: false.into(),
    };
    let threads = parts.min(threads()) as c_uint;
    // SAFETY: `region` only reads `job`, which outlives the call; panics do not cross into C.
    unsafe { (g.parallel)(region, &job as *const Job<'_> as *mut c_void, threads, 0) };
    assert!(
        !job.panicked.load(std::sync::atomic::Ordering::SeqCst),
        "a sparse kernel failed on a worker thread"
    );
}

/// Splits `0..len` into `parts` contiguous ranges, part `p`'s being returned.
pub fn share(len: usize, p: usize, parts: usize) -> std::ops::Range<usize> {
    (len * p / parts)..(len * (p + 1) / parts)
}
