//! sigchld — reaping children as they die, without blocking and without leaving zombies.
//!
//! Demonstrates: the kernel sends SIGCHLD when a child ends, but signals of one kind do
//! not queue: several deaths while one SIGCHLD is pending make one signal. A parent that
//! reaps one child per signal leaves zombies; one that calls waitpid(-1, WNOHANG) until
//! nothing is left does not. Also: signalfd, pidfd, and SIGCHLD ignored (no zombies, but
//! no statuses either).
//! Run:     cargo run --bin sigchld -- --reaper naive --simultaneous
//! Observe: one SIGCHLD for N deaths; the naive reaper leaves N-1 zombies in /proc.
//! Book:    book/src/lifecycle/sigchld.md

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::inspect::{inspect, wait_for_state};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

/// Reap children as they die, five ways, and count the SIGCHLD signals they cause.
///
/// The parent forks children that exit at staggered times (or, with --simultaneous, all
/// at once while SIGCHLD is blocked) and reaps them with the chosen strategy. The summary
/// counts the signals received, the children reaped, and the zombies the strategy left
/// behind, read from /proc; the demo then cleans up whatever is left.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  sigchld\n  sigchld --reaper naive --simultaneous\n  \
                        sigchld --reaper signalfd --children 1000\n  sigchld --reaper ignore"
)]
struct Args {
    /// How the parent learns of its children's deaths.
    #[arg(long, value_enum, default_value_t = Reaper::Handler)]
    reaper: Reaper,

    /// How many children (1-1000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Time over which the children's exits are spread (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = cli::seconds)]
    spread: Duration,

    /// Block SIGCHLD, let every child exit (all zombies), then unblock: one signal, N deaths.
    #[arg(long)]
    simultaneous: bool,

    /// Keep the zombies a strategy left (naive) this long before cleaning up (0-3600 s),
    /// to look at them with ps.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Reaper {
    /// A SIGCHLD handler records the signal; the main loop reaps with waitpid(-1, WNOHANG)
    /// until nothing is left.
    Handler,
    /// SIGCHLD blocked and read from a signalfd; then the same reaping loop.
    Signalfd,
    /// One pidfd per child (pidfd_open), poll, then waitid on the ready ones.
    Pidfd,
    /// SIGCHLD set to SIG_IGN: the kernel discards the children; wait fails with ECHILD.
    Ignore,
    /// The classic bug: exactly one waitpid per SIGCHLD.
    Naive,
}

/// What a strategy achieved.
#[derive(Default)]
struct Tally {
    signals: u64,
    reaped: Vec<Pid>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.spread > Duration::from_secs(60) {
        cli::usage_error("--spread is at most 60 seconds");
    }
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    let reaper = args.reaper;
    // Everything that decides how SIGCHLD is received must be in place before the first
    // child can die.
    // ANCHOR: setup
    let mut signal_fd = None;
    match reaper {
        Reaper::Handler | Reaper::Naive => signals::catch(Signal::SIGCHLD)?,
        Reaper::Signalfd => {
            signals::set_blocked(Signal::SIGCHLD, true)?; // delivered only through the fd
            let mask = SigSet::from(Signal::SIGCHLD);
            signal_fd = Some(SignalFd::with_flags(
                &mask,
                SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
            )?);
        }
        // SAFETY: SIG_IGN runs no code of ours.
        Reaper::Ignore => drop(unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }?),
        Reaper::Pidfd => {}
    }
    if args.simultaneous {
        signals::set_blocked(Signal::SIGCHLD, true)?;
    }
    // ANCHOR_END: setup

    let children = fork_children(args)?;
    if args.simultaneous {
        all_become_zombies(&children, reaper)?;
        if reaper != Reaper::Signalfd {
            signals::set_blocked(Signal::SIGCHLD, false)?;
            event("unblock").say("sigprocmask(SIG_UNBLOCK, SIGCHLD)");
        }
    }

    let tally = match reaper {
        Reaper::Handler => reap_on_signal(&children, false)?,
        Reaper::Naive => reap_on_signal(&children, true)?,
        Reaper::Signalfd => reap_from_signalfd(&children, signal_fd.as_ref().expect("made above"))?,
        Reaper::Pidfd => reap_by_pidfd(&children)?,
        Reaper::Ignore => let_the_kernel_reap(&children)?,
    };

    // The kernel's view: which of our children are still zombies?
    let zombies: Vec<Pid> = children
        .iter()
        .copied()
        .filter(|&pid| is_zombie(pid))
        .collect();
    if let Some(stop) = signals::stop_requested() {
        event("interrupted")
            .field("signal", stop.as_str())
            .say(format!(
                "interrupted by {stop}: killed the children still running; reaping them all"
            ));
    }
    if !zombies.is_empty() {
        let why = if signals::stop_requested().is_some() {
            "not reaped yet: the demo was interrupted".to_owned()
        } else if reaper == Reaper::Naive {
            format!(
                "{} SIGCHLD for {} deaths, and one waitpid per signal -- the bug",
                tally.signals,
                children.len()
            )
        } else {
            format!("left by the {} strategy", reaper_name(reaper))
        };
        event("zombies_left")
            .field("pids", pids(&zombies))
            .say(format!(
                "kernel says {} children are still zombies: {why}",
                zombies.len()
            ));
        if !args.hold.is_zero() {
            let seconds = args.hold.as_secs_f64();
            event("hold")
                .field("pids", pids(&zombies))
                .field("seconds", seconds)
                .say(format!(
                    "holding them {seconds}s; see them with:  ps -o pid,ppid,stat,cmd --ppid {}",
                    getpid()
                ));
            signals::sleep(args.hold);
        }
    }
    let cleaned = reap_everything_left()?;
    if cleaned > 0 {
        event("cleanup")
            .field("reaped", cleaned)
            .say(format!("cleanup: reaped the {cleaned} left"));
    }

    let reaped = tally.reaped.len();
    event("summary")
        .field("reaper", reaper_name(reaper))
        .field("simultaneous", args.simultaneous)
        .field("children", children.len())
        .field("signals", tally.signals)
        .field("reaped", reaped)
        .field(
            "reaped_by",
            if reaper == Reaper::Ignore {
                "kernel"
            } else {
                "parent"
            },
        )
        .field("zombies_left", zombies.len())
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(format!(
            "summary: {} children, {} SIGCHLD, {reaped} reaped, {} zombies left by {}",
            children.len(),
            tally.signals,
            zombies.len(),
            reaper_name(reaper)
        ));
    Ok(())
}

fn fork_children(args: &Args) -> anyhow::Result<Vec<Pid>> {
    let parent = getpid();
    let count = u32::from(args.children);
    let mut children = Vec::new();
    for index in 0..count {
        let delay = if args.simultaneous {
            Duration::ZERO
        } else {
            args.spread * (index + 1) / count
        };
        // SAFETY: single-threaded here; the child sleeps and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                std::thread::sleep(delay);
                Ok((index % 256) as i32)
            }),
            ForkResult::Parent { child } => children.push(child),
        }
        if signals::stop_requested().is_some() {
            break;
        }
    }
    let when = if args.simultaneous {
        "all at once".to_owned()
    } else {
        format!("over {:?}", args.spread)
    };
    event("forked").field("pids", pids(&children)).say(format!(
        "forked {} children ({}); they exit {when}",
        children.len(),
        shorten(&children)
    ));
    Ok(children)
}

/// `--simultaneous`: SIGCHLD is blocked, so every death leaves the same single SIGCHLD
/// pending. Confirm from /proc that all children are zombies before going on.
// ANCHOR: simultaneous
fn all_become_zombies(children: &[Pid], reaper: Reaper) -> anyhow::Result<()> {
    if reaper == Reaper::Ignore {
        return Ok(()); // ignored SIGCHLD: the kernel reaps at once, no zombie ever shows
    }
    for &pid in children {
        wait_for_state(pid.as_raw(), 'Z', Duration::from_secs(10))?;
    }
    let pending = signal_pending(Signal::SIGCHLD)?;
    event("all_zombies").field("pending", pending).say(format!(
        "kernel says all {} children are zombies; SIGCHLD pending: {pending} (one signal, however many deaths)",
        children.len()
    ));
    Ok(())
}
// ANCHOR_END: simultaneous

/// `handler` and `naive`: the handler only counts SIGCHLD and wakes the loop (see
/// `signals::catch`); the loop does the reaping.
// ANCHOR: on_signal
fn reap_on_signal(children: &[Pid], naive: bool) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let wake = signals::wake_fd()?; // the handler is installed; this is its self-pipe
    loop {
        let seen = signals::count(Signal::SIGCHLD);
        let new_signals = seen - tally.signals;
        tally.signals = seen;
        if new_signals > 0 {
            event("signal").field("count", seen).say(format!(
                "handler counted {new_signals} new SIGCHLD ({seen} so far); the loop wakes"
            ));
            if naive {
                for _ in 0..new_signals {
                    reap_one(&mut tally)?; // the bug: one child per signal
                }
            } else {
                while reap_one(&mut tally)? {} // right: until nothing is left to reap
            }
        }
        if tally.reaped.len() == children.len() || stopped(children) {
            return Ok(tally);
        }
        if new_signals == 0 && every_unreaped_is_zombie(children, &tally) {
            return Ok(tally); // all dead, yet some unreaped: no signal will come for them
        }
        wait_readable(wake, 100)?;
        signals::drain_wakeups();
    }
}
// ANCHOR_END: on_signal

/// One `waitpid(-1, WNOHANG)`: reaps one child that has ended, if there is one.
// ANCHOR: reap_one
fn reap_one(tally: &mut Tally) -> anyhow::Result<bool> {
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => Ok(false), // none ended / none left
        Ok(status) => {
            let pid = status.pid().expect("an ended child has a pid");
            event("reap")
                .field("child", pid.as_raw())
                .fields(child::ending(&status))
                .say(format!(
                    "waitpid(-1, WNOHANG) -> {pid} {}",
                    child::describe(&status)
                ));
            tally.reaped.push(pid);
            Ok(true)
        }
        Err(Errno::EINTR) => Ok(true),
        Err(error) => Err(error).context("waitpid(-1, WNOHANG)"),
    }
}
// ANCHOR_END: reap_one

/// `signalfd`: SIGCHLD stays blocked and is read like data. Each read returns one
/// pending signal, which may stand for several deaths.
// ANCHOR: signalfd
fn reap_from_signalfd(children: &[Pid], signal_fd: &SignalFd) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    while tally.reaped.len() < children.len() && !stopped(children) {
        wait_readable(signal_fd.as_fd(), 100)?;
        while let Some(info) = signal_fd.read_signal()? {
            tally.signals += 1;
            event("signal").field("from", info.ssi_pid).say(format!(
                "read(signalfd) -> SIGCHLD #{} (sent for {})",
                tally.signals, info.ssi_pid
            ));
            while reap_one(&mut tally)? {}
        }
    }
    Ok(tally)
}
// ANCHOR_END: signalfd

/// `pidfd`: one descriptor per child, readable once that child has ended. No signal is
/// involved, and no other child can be reaped by mistake.
// ANCHOR: pidfd
fn reap_by_pidfd(children: &[Pid]) -> anyhow::Result<Tally> {
    let mut waiting: Vec<(Pid, OwnedFd)> = Vec::new();
    for &pid in children {
        waiting.push((
            pid,
            child::pidfd_open(pid).with_context(|| format!("pidfd_open({pid})"))?,
        ));
    }
    let mut tally = Tally::default();
    while !waiting.is_empty() && !stopped(children) {
        let mut polled: Vec<PollFd> = waiting
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut polled, 100u16) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => return Err(error).context("poll"),
        }
        let ready: Vec<bool> = polled.iter().map(|fd| fd.any().unwrap_or(false)).collect();
        let mut index = 0;
        waiting.retain(|(pid, fd)| {
            let done = ready[index];
            index += 1;
            if done {
                let status = waitid(Id::PIDFd(fd.as_fd()), WaitPidFlag::WEXITED);
                if let Ok(status) = status {
                    event("reap")
                        .field("child", pid.as_raw())
                        .fields(child::ending(&status))
                        .say(format!(
                            "pidfd of {pid} readable -> waitid(P_PIDFD) -> {}",
                            child::describe(&status)
                        ));
                    tally.reaped.push(*pid);
                }
            }
            !done
        });
    }
    Ok(tally)
}
// ANCHOR_END: pidfd

/// `ignore`: with SIGCHLD set to SIG_IGN, children leave no zombie and no status. A
/// blocking wait waits until they have all gone, then fails with ECHILD.
// ANCHOR: ignore
fn let_the_kernel_reap(children: &[Pid]) -> anyhow::Result<Tally> {
    let result = loop {
        match waitpid(None, None) {
            Err(Errno::EINTR) if !stopped(children) => continue,
            other => break other,
        }
    };
    let gone: Vec<Pid> = children
        .iter()
        .copied()
        .filter(|pid| inspect(pid.as_raw()).is_err())
        .collect();
    let zombies = children.iter().filter(|&&pid| is_zombie(pid)).count();
    let errno = result.err().map(|errno| format!("{errno:?}"));
    event("wait_ignored").field("errno", errno).field("gone", gone.len()).field("zombies", zombies).say(format!(
        "waitpid(-1) -> {}: no status to collect; kernel says {} of {} children are gone, {zombies} zombies",
        match result {
            Ok(status) => child::describe(&status),
            Err(errno) => format!("{errno:?} ({})", errno.desc()),
        },
        gone.len(),
        children.len()
    ));
    Ok(Tally {
        signals: 0,
        reaped: gone,
    }) // reaped by the kernel, not by us
}
// ANCHOR_END: ignore

/// After the strategy: kill and reap whatever is left, so the demo leaves nothing behind.
fn reap_everything_left() -> anyhow::Result<usize> {
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => reaped += 1,
            Err(Errno::ECHILD) => return Ok(reaped),
            Err(Errno::EINTR) => {}
            Err(error) => return Err(error).context("waitpid(-1)"),
        }
    }
}

/// On Ctrl-C, SIGKILL every child still running; the caller then reaps them.
fn stopped(children: &[Pid]) -> bool {
    if signals::stop_requested().is_none() {
        return false;
    }
    for &pid in children {
        let _ = kill(pid, Signal::SIGKILL);
    }
    true
}

fn every_unreaped_is_zombie(children: &[Pid], tally: &Tally) -> bool {
    children
        .iter()
        .filter(|pid| !tally.reaped.contains(pid))
        .all(|&pid| is_zombie(pid))
}

fn is_zombie(pid: Pid) -> bool {
    inspect(pid.as_raw()).is_ok_and(|view| view.state == 'Z')
}

/// Whether `signal` is pending for this process, from the `ShdPnd` mask in
/// /proc/self/status.
fn signal_pending(signal: Signal) -> anyhow::Result<bool> {
    let status = procfs::process::Process::myself()?.status()?;
    Ok(status.shdpnd & (1 << (signal as u64 - 1)) != 0)
}

fn wait_readable(fd: std::os::fd::BorrowedFd, millis: u16) -> anyhow::Result<()> {
    match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], millis) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(error) => Err(error).context("poll"),
    }
}

fn reaper_name(reaper: Reaper) -> &'static str {
    match reaper {
        Reaper::Handler => "handler",
        Reaper::Signalfd => "signalfd",
        Reaper::Pidfd => "pidfd",
        Reaper::Ignore => "ignore",
        Reaper::Naive => "naive",
    }
}

fn pids(children: &[Pid]) -> Vec<i32> {
    children.iter().map(|pid| pid.as_raw()).collect()
}

fn shorten(children: &[Pid]) -> String {
    match children {
        [] => "none".to_owned(),
        [one] => one.to_string(),
        [first, .., last] if children.len() > 6 => format!("{first} … {last}"),
        _ => children
            .iter()
            .map(Pid::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    }
}
