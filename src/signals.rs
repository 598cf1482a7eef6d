//! signals — catching a signal without doing anything in the handler.
//!
//! A signal handler interrupts the program anywhere, even inside `malloc` or while a lock
//! is held, so it may only do what is async-signal-safe (signal-safety(7)). proclab's one
//! handler does two such things and nothing else: it counts the signal in an atomic, and
//! it writes one byte into a *self-pipe*, so that a program waiting in `poll` wakes up.
//! All the work — reaping children, cleaning up, printing — happens in ordinary code.
//!
//! The same mechanism serves the demos' clean exit: [`catch_stop_signals`] catches Ctrl-C
//! (SIGINT), SIGTERM and SIGHUP; the demo notices [`stop_requested`], cleans up, and
//! [`die_by`] dies by the same signal with its default action, so the shell sees
//! the program was interrupted (`$?` = 130 after Ctrl-C). Handlers are installed without
//! `SA_RESTART`: a blocking call returns EINTR when a signal arrives, instead of going on
//! waiting.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::pipe2;

/// The signals a person or a supervisor uses to stop a program.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// How many times the handler ran, per signal number.
static COUNTS: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];
/// Signals that were ignored when the program started (`nohup` ignores SIGHUP; a
/// non-interactive shell's `cmd &` ignores SIGINT): children get them back ignored.
static INHERITED_IGNORE: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
/// Signals caught as a request to the running program (a server's SIGHUP: reload), not
/// as a stop: [`stop_requested`] ignores them.
static REQUESTS: [AtomicBool; 65] = [const { AtomicBool::new(false) }; 65];
/// The self-pipe's write end, for the handler (-1 until it exists).
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The self-pipe's read end, for `poll`.
static WAKE_READ: OnceLock<OwnedFd> = OnceLock::new();

// ANCHOR: handler
/// The handler: count the signal, wake the main loop. Both are async-signal-safe.
extern "C" fn record(signo: libc::c_int) {
    if let Some(count) = COUNTS.get(signo as usize) {
        count.fetch_add(1, Ordering::SeqCst);
    }
    wake_from_handler();
}
// ANCHOR_END: handler

fn self_pipe() -> nix::Result<BorrowedFd<'static>> {
    if let Some(read_end) = WAKE_READ.get() {
        return Ok(read_end.as_fd());
    }
    let (read_end, write_end) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // Out of the way of the demo's own descriptors (a demo's first pipe is still 3 and 4,
    // as the book says).
    let (read_end, write_end) = (out_of_the_way(read_end)?, out_of_the_way(write_end)?);
    WAKE_WRITE.store(
        std::os::fd::IntoRawFd::into_raw_fd(write_end),
        Ordering::SeqCst,
    );
    Ok(WAKE_READ.get_or_init(|| read_end).as_fd())
}

/// The self-pipe's descriptors are numbered from here up.
const HIGH_FD: i32 = 100;

/// Moves `fd` to [`HIGH_FD`] or above; under a descriptor limit too low for that
/// (`ulimit -n 64`: F_DUPFD fails with EINVAL) it stays where it is — the demo still runs,
/// only its own descriptors get other numbers than the book shows.
fn out_of_the_way(fd: OwnedFd) -> nix::Result<OwnedFd> {
    match nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD)) {
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        Ok(high) => Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(high) }),
        Err(Errno::EINVAL) => Ok(fd),
        Err(error) => Err(error),
    }
}

/// Installs the counting handler for `signal` (with SA_NOCLDSTOP for SIGCHLD: only
/// children that end count). Each caught signal also makes [`wake_fd`] readable.
///
/// # References: sigaction(2), signal-safety(7), pipe(7)
pub fn catch(signal: Signal) -> nix::Result<()> {
    self_pipe()?;
    let flags = if signal == Signal::SIGCHLD {
        SaFlags::SA_NOCLDSTOP
    } else {
        SaFlags::empty()
    };
    let action = SigAction::new(SigHandler::Handler(record), flags, SigSet::empty());
    // SAFETY: `record` only does async-signal-safe things (an atomic add, a write).
    let previous = unsafe { signal::sigaction(signal, &action) }?;
    if matches!(previous.handler(), SigHandler::SigIgn) {
        INHERITED_IGNORE[signal as usize].store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// The self-pipe's read end: readable after any signal caught by [`catch`], for a
/// program that waits in its own `poll`.
///
/// # References: pipe(7), poll(2)
pub fn wake_fd() -> nix::Result<BorrowedFd<'static>> {
    self_pipe()
}

/// Wakes the main loop from a signal handler: writes one byte into the self-pipe.
/// Async-signal-safe (one `write(2)` on a non-blocking pipe; errno is saved and restored
/// because `write` may change it under the interrupted code's feet),
/// so a demo that installs its own handler with `sigaction` may call it there.
///
/// # References: signal-safety(7)
pub fn wake_from_handler() {
    let saved_errno = Errno::last_raw();
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe
    // (the loop is already awake) drops the byte instead of blocking the handler.
    let _ = unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    Errno::set_raw(saved_errno);
}

/// How many times `signal` has been caught since the program started.
pub fn count(signal: Signal) -> u64 {
    COUNTS[signal as usize].load(Ordering::SeqCst)
}

/// Empties the self-pipe after a wake-up, so that the next `poll` waits for a new signal.
pub fn drain_wakeups() {
    if let Some(read_end) = WAKE_READ.get() {
        let mut buffer = [0u8; 256];
        while matches!(nix::unistd::read(read_end, &mut buffer), Ok(n) if n > 0) {}
    }
}

/// Gives `signal` its default action again.
///
/// # References: sigaction(2)
pub fn restore_default(signal: Signal) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    let _ = unsafe { signal::sigaction(signal, &default) };
}

/// Blocks (`block = true`) or unblocks `signal` for this process: a blocked signal stays
/// pending — once, however many times it is sent — until it is unblocked.
///
/// # References: sigprocmask(2), signal(7) "Signal mask and pending signals"
pub fn set_blocked(signal: Signal, block: bool) -> nix::Result<()> {
    let how = if block {
        SigmaskHow::SIG_BLOCK
    } else {
        SigmaskHow::SIG_UNBLOCK
    };
    signal::sigprocmask(how, Some(&SigSet::from(signal)), None)
}

/// Catches SIGINT, SIGTERM and SIGHUP so that the demo can clean up before it dies. A
/// stop signal the demo was started with ignored (under `nohup`, say) stays ignored: the
/// person who started it asked for that.
pub fn catch_stop_signals() -> nix::Result<()> {
    for stop in STOP_SIGNALS {
        catch(stop)?;
        if INHERITED_IGNORE[stop as usize].load(Ordering::SeqCst) {
            ignore(stop)?;
        }
    }
    Ok(())
}

/// Ignores `signal` (SIG_IGN): it is discarded on arrival, even if pending.
///
/// # References: sigaction(2)
pub fn ignore(signal: Signal) -> nix::Result<()> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs no code of ours.
    unsafe { signal::sigaction(signal, &ignore) }.map(drop)
}

/// Catches `signal` as a request that the program handles while it goes on running — a
/// server's SIGHUP means "reload" — rather than as a stop: it is counted ([`count`]) and
/// wakes the self-pipe, and [`stop_requested`] ignores it. A signal the program was
/// started with ignored stays ignored, as in [`catch_stop_signals`].
pub fn catch_request(signal: Signal) -> nix::Result<()> {
    REQUESTS[signal as usize].store(true, Ordering::SeqCst);
    catch(signal)?;
    if INHERITED_IGNORE[signal as usize].load(Ordering::SeqCst) {
        ignore(signal)?;
    }
    Ok(())
}

/// The stop signal that has arrived, if any.
pub fn stop_requested() -> Option<Signal> {
    STOP_SIGNALS
        .into_iter()
        .find(|&stop| count(stop) > 0 && !REQUESTS[stop as usize].load(Ordering::SeqCst))
}

/// An error if a stop signal has arrived: for loops that never block (and so never see
/// EINTR), to stop early and let the demo clean up.
pub fn bail_if_stopped() -> anyhow::Result<()> {
    match stop_requested() {
        Some(stop) => anyhow::bail!("interrupted by {stop}"),
        None => Ok(()),
    }
}

/// Dies by `stop` now, with its default action, so that the shell sees the program was
/// interrupted (`$?` = 130 after Ctrl-C). [`crate::cli::run_stoppable`] calls it once the
/// demo has cleaned up and every child is reaped.
///
/// # References: raise(3), signal(7)
pub fn die_by(stop: Signal) -> ! {
    restore_default(stop);
    let _ = set_blocked(stop, false);
    let _ = signal::raise(stop);
    std::process::exit(128 + stop as i32); // only if the signal could not kill us
}

/// Waits until `fd` is readable (or at EOF), a caught signal arrives, or `timeout` passes
/// — whichever comes first; returns whether `fd` is readable. Race-free: a signal that
/// came just before the call has left a byte in the self-pipe, so `poll` returns at once.
/// Check [`stop_requested`] before calling it again.
///
/// # References: poll(2)
pub fn wait_readable(fd: Option<BorrowedFd>, timeout: Duration) -> bool {
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds: Vec<PollFd> = fd
        .into_iter()
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    let watched = fds.len();
    if let Some(wake) = WAKE_READ.get() {
        fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
    }
    let _ = poll(&mut fds, PollTimeout::from(millis));
    let ready = fds[..watched].iter().any(|fd| fd.any().unwrap_or(false));
    drain_wakeups();
    ready
}

/// Sleeps for `duration`, or less if a stop signal arrives; returns true if it slept the
/// whole time. It waits in `poll` on the self-pipe, so a signal cannot slip in unseen
/// between a check and the sleep.
///
/// # References: poll(2)
pub fn sleep(duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    let Ok(wake) = self_pipe() else {
        std::thread::sleep(duration);
        return true;
    };
    while stop_requested().is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let _ = poll(
            &mut [PollFd::new(wake, PollFlags::POLLIN)],
            PollTimeout::from(millis),
        );
        drain_wakeups();
    }
    false
}

/// In a freshly forked child: gives SIGINT, SIGTERM, SIGHUP and SIGCHLD back the actions
/// the program started with (the default, or ignored if it was started so) and forgets
/// the parent's counts, so that Ctrl-C ends the child as it ends any program and the child
/// never wakes the parent's self-pipe.
pub fn reset_after_fork() {
    // A child has no use for the parent's self-pipe: close both ends, so that it neither
    // wakes the parent nor shows a stray pipe in /proc/<pid>/fd.
    if let Some(read_end) = WAKE_READ.get() {
        let _ = nix::unistd::close(std::os::fd::AsRawFd::as_raw_fd(read_end));
        let _ = nix::unistd::close(WAKE_WRITE.swap(-1, Ordering::SeqCst));
    }
    for caught in STOP_SIGNALS.into_iter().chain([Signal::SIGCHLD]) {
        if INHERITED_IGNORE[caught as usize].load(Ordering::SeqCst) {
            let _ = ignore(caught);
        } else {
            restore_default(caught);
        }
        COUNTS[caught as usize].store(0, Ordering::SeqCst);
    }
}
