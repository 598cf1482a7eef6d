//! fifo — watching a FIFO from outside: when its ends are open, and when its name is gone.
//!
//! The fifo demo must know when both of its programs have the FIFO open (to remove the
//! name then), and must notice at once when one of them dies first (the other's open()
//! would wait for ever). /proc answers neither without polling. inotify(7) reports each
//! completed open() of the FIFO (IN_OPEN) and each change of its link count (IN_ATTRIB:
//! its name removed), and a pidfd becomes readable when its process ends; so one poll(2)
//! waits for all of it, and for Ctrl-C on the self-pipe. No busy-waiting, and no path
//! compared with /proc/<pid>/fd (a TMPDIR behind a symbolic link would never match).
//!
//! Also here: the command line the demo gives each side ([`command_for`]), and the wording
//! of its mkfifo, ended_early and summary lines. mkfifo, open, fork and exec stay in
//! `demos/pipes/fifo.rs`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::names::PrivateDir;
use crate::narrate::{self, event};
use crate::{child, cli, signals};

/// What [`OpenWatch::wait`] saw first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// An open() of the FIFO has completed: both ends are there.
    Opened,
    /// This process ended first.
    Ended(Pid),
    /// The time limit passed.
    TimedOut,
    /// A stop signal (Ctrl-C, SIGTERM, SIGHUP) came.
    Stopped,
}

/// Watches one FIFO for completed opens.
pub struct OpenWatch {
    inotify: Inotify,
    opened: usize,
}

impl OpenWatch {
    /// Starts watching the opens of the FIFO at `path` that complete from now on.
    ///
    /// # References: inotify(7) IN_OPEN, inotify_add_watch(2)
    pub fn new(path: &Path) -> nix::Result<OpenWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(path, AddWatchFlags::IN_OPEN)?;
        Ok(OpenWatch { inotify, opened: 0 })
    }

    /// Waits until an open() of the FIFO has completed, one of `processes` has ended, a
    /// stop signal has come, or `limit` (if any) has passed — whichever is first. A
    /// blocking open() of a FIFO completes only once the other end is opened too, so the
    /// first completed open means both sides are there. (The opens cannot be counted:
    /// inotify merges an event into an identical one still unread.)
    ///
    /// # References: poll(2), pidfd_open(2)
    pub fn wait(&mut self, processes: &[Pid], limit: Option<Duration>) -> nix::Result<Watched> {
        let pidfds: Vec<OwnedFd> = processes
            .iter()
            .map(|&pid| child::pidfd_open(pid))
            .collect::<nix::Result<_>>()?;
        let deadline = limit.map(|limit| Instant::now() + limit);
        loop {
            self.opened += count_events(&self.inotify)?;
            if self.opened > 0 {
                return Ok(Watched::Opened);
            }
            if let Some(ended) = ended(processes, &pidfds) {
                return Ok(Watched::Ended(ended));
            }
            if signals::stop_requested().is_some() {
                return Ok(Watched::Stopped);
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                    }
                    _ => return Ok(Watched::TimedOut),
                },
            };
            let mut fds = vec![PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                pidfds
                    .iter()
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
            fds.push(PollFd::new(signals::wake_fd()?, PollFlags::POLLIN));
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => signals::drain_wakeups(),
                Err(error) => return Err(error),
            }
        }
    }
}

/// Waits until the name `path` is gone (or `limit` passes, or a stop signal comes);
/// returns whether it is gone.
///
/// # References: inotify(7) IN_ATTRIB (the link count changed), IN_DELETE_SELF
pub fn wait_until_unlinked(path: &Path, limit: Duration) -> nix::Result<bool> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let deadline = Instant::now() + limit;
    match inotify.add_watch(
        path,
        AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE_SELF,
    ) {
        Err(Errno::ENOENT) => return Ok(true), // gone already
        other => other?,
    };
    while path.exists() && signals::stop_requested().is_none() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(false);
        };
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals::wake_fd()?, PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => signals::drain_wakeups(),
            Err(error) => return Err(error),
        }
        count_events(&inotify)?;
    }
    Ok(!path.exists())
}

/// Reads the events waiting in `inotify` (none: 0) and returns how many there were.
fn count_events(inotify: &Inotify) -> nix::Result<usize> {
    match inotify.read_events() {
        Ok(events) => Ok(events.len()),
        Err(Errno::EAGAIN) => Ok(0),
        Err(error) => Err(error),
    }
}

/// The first of `processes` whose pidfd is readable: it has ended.
fn ended(processes: &[Pid], pidfds: &[OwnedFd]) -> Option<Pid> {
    let mut fds: Vec<PollFd> = pidfds
        .iter()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    poll(&mut fds, PollTimeout::ZERO).ok()?;
    let index = fds.iter().position(|fd| fd.any().unwrap_or(false))?;
    Some(processes[index])
}

/// Reaps the two programs of the fifo demo, each named by its role, with a `wait` event
/// for each; returns whether the reader exited 0 (fifo_reader's "exactly once"). With
/// `end_them` (one side ended early, or a stop came) both are stopped, then killed, first:
/// SIGSTOP before SIGKILL, so that neither sees the other go and complains of a broken
/// pipe. The writer is reaped first: if a stop signal makes `wait_or_kill` kill it, the
/// reader sees EOF, not an error.
///
/// # References: waitpid(2), kill(2), signal(7) SIGSTOP
pub fn reap_sides(sides: &mut [(&'static str, Pid)], end_them: bool) -> anyhow::Result<bool> {
    if end_them {
        for signal in [Signal::SIGSTOP, Signal::SIGKILL] {
            for &(_, pid) in sides.iter() {
                let _ = kill(pid, signal);
            }
        }
    }
    sides.sort_by_key(|&(role, _)| role == "reader");
    let mut reader_ok = false;
    for &(role, pid) in sides.iter() {
        let status = child::wait_or_kill(pid)?;
        event("wait")
            .field("of", role)
            .field("child", pid.as_raw())
            .fields(child::ending(&status))
            .say(format!(
                "waitpid({pid}) -> the {role} {}",
                child::describe(&status)
            ));
        reader_ok |= role == "reader" && matches!(status, WaitStatus::Exited(_, 0));
    }
    Ok(reader_ok)
}

/// Fails unless `path` is a FIFO: a regular file would be read (or overwritten), and a
/// symbolic link could point anywhere. (Open it with O_NOFOLLOW too: it could be swapped.)
///
/// # References: lstat(2), fifo(7)
pub fn refuse_anything_but_a_fifo(path: &Path) -> anyhow::Result<()> {
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => "a symbolic link; refusing to follow it",
        Ok(meta) if meta.is_dir() => "a directory, not a FIFO",
        Ok(_) => "not a FIFO (make one with mkfifo)",
        Err(_) => "missing (make one with mkfifo)",
    };
    anyhow::bail!("{} is {kind}", path.display())
}

/// The role of the side in `started` that `seen` says ended before the rendezvous, if
/// one did; narrated as `ended_early` (the demo then ends the other side, whose open()
/// would wait for ever).
pub fn ended_early(started: &[(&'static str, Pid)], seen: Watched) -> Option<&'static str> {
    let (role, _) = started
        .iter()
        .find(|&&(_, pid)| seen == Watched::Ended(pid))?;
    event("ended_early").field("of", role).say(format!(
        "the {role} ended before the rendezvous: ending the other side, whose open() would wait for ever"
    ));
    Some(role)
}

/// The fifo demo's command for one side, `fifo_reader` or `fifo_writer` (built beside the
/// demo): the path, `--records`, the demo's clock (`--t0`), `--linger` for the writer (it
/// keeps the FIFO open until its name is gone) and `--json` if the demo has it.
pub fn command_for(role: &str, path: &Path, records: u64) -> anyhow::Result<Command> {
    let program = cli::sibling_program(&format!("fifo_{role}"))?; // target/debug/fifo_reader
    let mut command = Command::new(&program);
    command.arg(path).args(["--records", &records.to_string()]);
    command.args(["--t0", &narrate::start_ns().to_string()]); // our clock
    if role == "writer" {
        command.arg("--linger"); // keep the FIFO open until its name is gone
    }
    command.args(narrate::json().then_some("--json"));
    Ok(command)
}

/// Narrates the fifo demo's `mkfifo`: the FIFO, its private directory, and the guard that
/// removes the directory if the demo is killed.
pub fn say_made(path: &Path, dir: &PrivateDir) {
    let guard = dir.guard().map(Pid::as_raw);
    event("mkfifo")
        .field("path", path)
        .field("dir", dir.path())
        .field("guard", guard)
        .say(format!(
            "mkfifo({}, 0600) in a private directory (0700); if I am killed, guard {} removes it",
            path.display(),
            guard.unwrap_or_default()
        ));
}

/// Narrates the fifo demo's `summary`: who started first, the records sent, whether the
/// reader counted each exactly once, and whether the name was removed while open.
pub fn say_summary(
    path: &Path,
    first: &str,
    sent: u64,
    reader_ok: bool,
    seen: Watched,
    dir: &Path,
) {
    event("summary")
        .field("path", path)
        .field("first", first)
        .field("sent", sent)
        .field("exactly_once", reader_ok)
        .field("removed_while_open", seen == Watched::Opened)
        .field("dir_gone", !dir.exists())
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(format!(
            "summary: {sent} records from writer to reader through {}; the reader counted each exactly once: {reader_ok}",
            path.display()
        ));
}
