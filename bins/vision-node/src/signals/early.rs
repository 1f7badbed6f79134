//! The stop-signal handler installed before `main`: an ELF constructor.
//!
//! Between `execve` and `main` the process runs the dynamic loader (mapping the
//! libraries, relocating the binary) and the standard library's start-up; a
//! SIGTERM landing there meets the default action and kills the node. The
//! earliest code a program can run is a constructor in `.init_array`, called by
//! the loader right after relocation, before the standard library's
//! initialisation and `main`. [`arm`] runs there (and again at the top of `main`,
//! where it is a no-op; on platforms without `.init_array` that call is the
//! first). It:
//!
//! 1. points SIGINT and SIGTERM at [`on_stop`], which only sets [`STOPPED`]
//!    (an atomic store: async-signal-safe), and
//! 2. then unblocks both signals. A parent may start the node with them blocked
//!    (a careful supervisor does, to close the window before the first
//!    instruction; the mask is inherited across `execve` and a blocked signal
//!    stays pending): the pending signal is delivered to the handler at this
//!    point. Without the unblock, a node started with SIGTERM blocked would never
//!    see SIGTERM at all.
//!
//! Once the async runtime runs, tokio's signal listeners (signal-hook-registry)
//! take over both signals and call the previous handler (this one) too, so
//! [`STOPPED`] stays a true record of every stop signal.
//!
//! ## Unsafe code
//! The second exception to the workspace's `unsafe_code = "deny"`
//! (docs/ARCHITECTURE.md, "Unsafe code"): two libc calls (`sigaction`,
//! `pthread_sigmask`) and the `#[unsafe(link_section)]` attribute that places
//! [`CONSTRUCTOR`] in `.init_array`. Each carries a `SAFETY:` note.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Set by the first SIGINT or SIGTERM from the constructor on.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// `CLOCK_MONOTONIC` when the handler was first installed, in nanoseconds (0: not yet).
static ARMED_MONOTONIC_NS: AtomicU64 = AtomicU64::new(0);
/// The main thread's CPU time when the handler was first installed, in
/// nanoseconds: the process's own work between `execve` (plus the few
/// microseconds its parent's fork ran before it) and the handler.
static ARMED_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// When the handler went in: (`CLOCK_MONOTONIC` in ns, the main thread's CPU time
/// in ns), for the start-up log line that the `fault:early-sigterm` cell reads.
pub(crate) fn armed_at() -> (u64, u64) {
    (
        ARMED_MONOTONIC_NS.load(Ordering::SeqCst),
        ARMED_CPU_NS.load(Ordering::SeqCst),
    )
}

/// A clock's reading in nanoseconds (0 if it cannot be read).
#[cfg(unix)]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` to a valid local pointer; it
    // is async-signal-safe and needs no initialised runtime (a vDSO call).
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Did SIGINT or SIGTERM arrive since the constructor ran?
pub(crate) fn stopped() -> bool {
    STOPPED.load(Ordering::SeqCst)
}

/// The handler: one atomic store, nothing else (async-signal-safe).
#[cfg(unix)]
extern "C" fn on_stop(_sig: libc::c_int) {
    STOPPED.store(true, Ordering::SeqCst);
}

/// Install [`on_stop`] for SIGINT and SIGTERM unless a handler is already in
/// place, then unblock both. Safe to call more than once.
pub(crate) fn arm() {
    #[cfg(unix)]
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` with a null new action only reads the current one
        // into `old`, a zeroed `sigaction` (a valid value of that plain C struct).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointers are to locals that outlive the call.
        let read = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        if read == 0 && old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            // A handler is in place (ours, or tokio's chaining to ours).
            continue;
        }
        // SAFETY: a zeroed `sigaction` is a valid value of that plain C struct; its
        // handler is `on_stop`, an `extern "C" fn(c_int)` that only does an atomic
        // store (async-signal-safe), with an empty mask and `SA_RESTART` so that
        // interrupted system calls resume. `sigemptyset` only writes the local.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
    #[cfg(unix)]
    if ARMED_MONOTONIC_NS.load(Ordering::SeqCst) == 0 {
        ARMED_CPU_NS.store(clock_ns(libc::CLOCK_THREAD_CPUTIME_ID), Ordering::SeqCst);
        ARMED_MONOTONIC_NS.store(clock_ns(libc::CLOCK_MONOTONIC), Ordering::SeqCst);
    }
    #[cfg(unix)]
    // SAFETY: `set` is a local `sigset_t` initialised by `sigemptyset` before
    // `sigaddset`; `pthread_sigmask` only reads it (the old mask is not asked for).
    // Unblocking with the handler already installed: a pending signal runs
    // `on_stop`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The constructor the loader calls before the standard library's start-up and
/// `main`. Not in the crate's unit-test binary (the test harness keeps the
/// default actions).
#[cfg(all(target_os = "linux", not(test)))]
#[used]
// SAFETY: `.init_array` holds pointers to functions the loader calls once, in
// the main thread, before `main`, with (argc, argv, envp), which a C function
// taking no arguments ignores (the System V calling convention passes them in
// registers). `arm` touches no Rust runtime state: only libc calls and an atomic.
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = {
    extern "C" fn constructor() {
        arm();
    }
    constructor
};
