//! child — the two chores around every `fork`: ending the child properly and telling the
//! parent, in words, how it ended.
//!
//! A forked child is a copy of the parent, Rust runtime included. If its code returned
//! from `main` or unwound out of a panic, it would run the parent's code after the fork
//! and flush the parent's buffers a second time. [`run_then_exit`] prevents that: the child's body
//! always ends in `_exit(2)`, a panic becomes one line on stderr and status 101, and the
//! child is bound to die with its parent, so an interrupted demo leaves no process
//! behind.
//!
//! The `fork()` itself stays in the demos, where it is the lesson.

use std::any::Any;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

use anyhow::Context;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{Pid, getppid};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::signals;

/// Runs `body` in a freshly forked child and ends the process with `_exit`, never
/// returning into the parent's code.
///
/// - `Ok(code)` exits with `code`; `Err(e)` prints one line on stderr and exits 1; a
///   panic prints one line on stderr and exits 101, as an uncaught panic does.
/// - Before `body` runs, the child asks for SIGKILL if `parent` dies (checked against
///   `getppid()` right after, in case the parent is already gone), so that killing the
///   demo never leaves its children running, and the signals the demo catches get their
///   default actions back.
///
/// # References: fork(2), _exit(2), PR_SET_PDEATHSIG in prctl(2)
pub fn run_then_exit(parent: Pid, body: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    exit_after(|| {
        die_with_parent(parent)?;
        match body() {
            // A child whose parent is gone (killed: SIGKILL follows) has nobody to tell.
            Err(_) if getppid() != parent => Ok(1),
            result => result,
        }
    })
}

/// Like [`run_then_exit`], but the child is not bound to die with its parent: for a child that is
/// meant to outlive it (an orphan). It must see to its own end.
pub fn run_unbound_then_exit(body: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    exit_after(body)
}

fn exit_after(body: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    signals::reset_after_fork();
    // The default hook prints several lines; a child's panic is worth exactly one.
    panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        let message = panic_message(info.payload());
        report(&format!("panicked{}: {message}", place.unwrap_or_default()));
    }));
    let code = match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            report(&format!("error: {error:#}"));
            1
        }
        Err(_) => 101,
    };
    // SAFETY: _exit ends the process at once; no Rust state is used after it.
    unsafe { libc::_exit(code) }
}

/// `waitpid(pid, 0)` that cannot hang a demo being stopped: if Ctrl-C or SIGTERM
/// interrupts the wait (EINTR), the child is sent SIGKILL and waited for again.
///
/// # References: waitpid(2), signal(7) "Interruption of system calls"
pub fn wait_or_kill(pid: Pid) -> anyhow::Result<WaitStatus> {
    // Waiting in poll on a pidfd and the signal self-pipe, rather than in a blocking
    // waitpid, leaves no window where a stop signal could come unseen.
    let pidfd = pidfd_open(pid).ok();
    loop {
        if signals::stop_requested().is_some() {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                let pidfd = pidfd.as_ref().map(std::os::fd::AsFd::as_fd);
                signals::wait_readable(pidfd, std::time::Duration::from_millis(100));
                // (readable or not, the loop checks for a stop and the child's end again)
            }
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.with_context(|| format!("waitpid({pid})")),
        }
    }
}

/// `waitpid(-1, 0)`: waits for whichever child ends first. A parent of several workers
/// that share a lock must not wait for them in order: if a later one dies holding the
/// lock, the first waits for ever, and so would the parent. A stop signal interrupts the
/// wait (EINTR: the handlers have no SA_RESTART) and becomes an error, after which
/// [`crate::cli::run_stoppable`] ends the rest.
///
/// # References: waitpid(2)
pub fn wait_for_any() -> anyhow::Result<WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Err(nix::errno::Errno::EINTR) => signals::bail_if_stopped()?,
            other => return other.context("waitpid(-1)"),
        }
    }
}

/// `waitpid(-1, WNOHANG)`: a child that has already ended, if any (`None` while all
/// run). A parent that spins waiting for its workers to be ready asks this on each turn:
/// a worker killed before it got ready would otherwise keep the parent spinning for ever.
///
/// # References: waitpid(2) WNOHANG
pub fn ended_already() -> anyhow::Result<Option<WaitStatus>> {
    match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => Ok(None),
        other => other.map(Some).context("waitpid(-1, WNOHANG)"),
    }
}

/// After an error: kills the children still running and reaps every child, so that a
/// demo that fails leaves no process and no zombie behind. The children are found in
/// `/proc/self/task/<pid>/children`; a kernel without that file gets a best effort.
///
/// # References: proc_pid_task(5) `children`, waitpid(2)
pub fn end_all_children() {
    let me = std::process::id();
    let listed =
        std::fs::read_to_string(format!("/proc/self/task/{me}/children")).unwrap_or_default();
    for pid in listed.split_whitespace().filter_map(|pid| pid.parse().ok()) {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return, // ECHILD: none left
        }
    }
}

/// Makes a one-way channel for a child's result, over a pipe: the child [`ResultWriter::
/// send`]s one value (as a JSON line), the parent [`ResultReader::receive`]s it. After the
/// fork, each side drops the end it does not use. Receive *before* `waitpid`: a result
/// larger than the pipe would otherwise block the child forever.
///
/// # References: pipe(2)
pub fn result_pipe() -> nix::Result<(ResultReader, ResultWriter)> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((ResultReader(read_end), ResultWriter(write_end)))
}

/// The parent's end of [`result_pipe`].
pub struct ResultReader(OwnedFd);

/// The child's end of [`result_pipe`].
pub struct ResultWriter(OwnedFd);

impl ResultWriter {
    /// Sends `value` and closes the pipe.
    pub fn send(self, value: &impl Serialize) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        std::fs::File::from(self.0)
            .write_all(&line)
            .context("write result")
    }
}

impl AsFd for ResultReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl ResultReader {
    /// Reads the child's value; fails if the child ended without sending one.
    pub fn receive<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        self.receive_unless(|| None)
    }

    /// Like [`ResultReader::receive`], but gives up with `trouble`'s message as soon as it
    /// returns one (checked every 100 ms): for a parent whose wait depends on other
    /// children staying alive.
    pub fn receive_unless<T: DeserializeOwned>(
        self,
        mut trouble: impl FnMut() -> Option<String>,
    ) -> anyhow::Result<T> {
        let mut text = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            // poll first (with the signal self-pipe): a stop cannot slip in before the read.
            signals::bail_if_stopped()?;
            if let Some(message) = trouble() {
                anyhow::bail!(message);
            }
            if !signals::wait_readable(Some(self.0.as_fd()), std::time::Duration::from_millis(100))
            {
                continue;
            }
            match nix::unistd::read(&self.0, &mut buffer) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buffer[..n]),
                Err(nix::errno::Errno::EINTR) if signals::stop_requested().is_none() => {}
                Err(error) => return Err(error).context("read result"),
            }
        }
        serde_json::from_slice(&text).context("the child sent no result")
    }
}

/// A forked child that will send the parent one result: see [`spawn`].
pub struct Spawned {
    /// The child's pid.
    pub pid: Pid,
    results: ResultReader,
}

/// Forks a child, named `role` in the timeline, that runs `body` and sends what it
/// returns to the parent through a [`result_pipe`]. Each side closes the end it does not
/// use, so a parent can never wait on a pipe it holds open itself.
///
/// # Safety
/// The caller must be single-threaded, as for any fork(2) that runs Rust code after it.
pub unsafe fn spawn<T: Serialize>(
    role: &'static str,
    body: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<Spawned> {
    let (results, result_writer) = result_pipe()?;
    let parent = nix::unistd::getpid();
    // SAFETY: the caller promises a single-threaded process; the child only runs `body`,
    // sends, and leaves through _exit.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => run_then_exit(parent, || {
            crate::narrate::set_role(role);
            drop(results);
            result_writer.send(&body()?)?;
            Ok(0)
        }),
        nix::unistd::ForkResult::Parent { child } => Ok(Spawned {
            pid: child,
            results,
        }),
    }
}

impl Spawned {
    /// Receives the child's result, then reaps it. Gives up — killing the child, which
    /// would otherwise wait for ever — as soon as one of `partners` ends: the work it was
    /// to do will not be done.
    pub fn collect<T: DeserializeOwned>(self, partners: &[Pid]) -> anyhow::Result<T> {
        let result = self.results.receive_unless(|| {
            let ended = partners
                .iter()
                .find(|pid| !crate::inspect::running(pid.as_raw()))?;
            Some(format!("{ended} ended before its work was done: giving up"))
        });
        if result.is_err() {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
        }
        wait_or_kill(self.pid)?;
        result
    }
}

/// Asks the kernel to SIGKILL this process when the thread that forked it ends, then
/// checks that `parent` had not already gone before the request took effect.
///
/// # References: prctl(2) PR_SET_PDEATHSIG, getppid(2)
pub fn die_with_parent(parent: Pid) -> anyhow::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if result != 0 {
        anyhow::bail!("prctl(PR_SET_PDEATHSIG): {}", nix::errno::Errno::last());
    }
    if getppid() != parent {
        // The parent died between fork and prctl: nobody is left to wait for us.
        // SAFETY: _exit ends the process at once.
        unsafe { libc::_exit(1) }
    }
    Ok(())
}

/// Gives SIGPIPE back its default action (terminate) before an exec.
///
/// Rust programs ignore SIGPIPE, and an ignored signal stays ignored across `execve`: a
/// program exec'd from Rust would otherwise see EPIPE errors where it expects to be
/// quietly killed (`yes | head -1` relies on it).
///
/// # References: signal(7) "Signal mask and pending signals", execve(2)
pub fn default_sigpipe() -> nix::Result<()> {
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map(drop)
}

/// Opens a pidfd for `pid`: a file descriptor that refers to that process (not to
/// whatever process gets its number later) and becomes readable when it ends.
///
/// # References: pidfd_open(2)
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Prepares this process to be killed by `signal` when it sends it to itself: the
/// signal's action goes back to the default (Rust installs its own SIGSEGV handler), it
/// is unblocked, and the core-file size limit drops to 0 so that a SIGSEGV or SIGABRT
/// leaves no `core` file in your directory.
///
/// # References: sigaction(2), sigprocmask(2), setrlimit(2) RLIMIT_CORE, core(5)
pub fn prepare_to_die_by(signal: Signal) -> nix::Result<()> {
    if signal != Signal::SIGKILL && signal != Signal::SIGSTOP {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        unsafe { signal::signal(signal, SigHandler::SigDfl) }?;
    }
    signal::sigprocmask(
        signal::SigmaskHow::SIG_UNBLOCK,
        Some(&SigSet::from(signal)),
        None,
    )?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
}

/// How a child ended, as plain data for the JSON timeline: `status` in words, and either
/// `code` or `signal` (its name) with `core_dumped`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ending {
    /// [`describe`]'s words.
    pub status: String,
    /// The exit status, if the child exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal's name (`SIGKILL`), if a signal killed the child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'static str>,
    /// Whether the kernel wrote a core dump, if a signal killed the child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_dumped: Option<bool>,
}

/// Decodes a wait status into an [`Ending`].
pub fn ending(status: &WaitStatus) -> Ending {
    let (code, signal, core_dumped) = match *status {
        WaitStatus::Exited(_, code) => (Some(code), None, None),
        WaitStatus::Signaled(_, signal, core) => (None, Some(signal.as_str()), Some(core)),
        _ => (None, None, None),
    };
    Ending {
        status: describe(status),
        code,
        signal,
        core_dumped,
    }
}

/// Describes how a child ended, as the parent learns it from `waitpid`:
/// "exited with status 7", "killed by signal 9 (SIGKILL)",
/// "killed by signal 11 (SIGSEGV), core dumped".
///
/// # References: waitpid(2) WIFEXITED, WEXITSTATUS, WIFSIGNALED, WTERMSIG, WCOREDUMP
pub fn describe(status: &WaitStatus) -> String {
    match *status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core) => {
            let core = if core { ", core dumped" } else { "" };
            format!(
                "killed by signal {} ({}){core}",
                signal as i32,
                signal.as_str()
            )
        }
        WaitStatus::Stopped(_, signal) => {
            format!("stopped by signal {} ({})", signal as i32, signal.as_str())
        }
        WaitStatus::Continued(_) => "continued".to_owned(),
        WaitStatus::StillAlive => "still running".to_owned(),
        #[allow(unreachable_patterns)]
        _ => format!("{status:?}"),
    }
}

/// Writes `child <pid> <what>` to stderr in one `write(2)`, so that it never interleaves
/// with another process's line.
fn report(what: &str) {
    let line = format!("child {}: {what}\n", std::process::id());
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described_in_words() {
        let pid = Pid::from_raw(4243);
        assert_eq!(
            describe(&WaitStatus::Exited(pid, 7)),
            "exited with status 7"
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
    }
}
