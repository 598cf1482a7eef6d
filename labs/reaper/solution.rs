//! reaper — the answer key: start the children stdin names, reap each as it ends, never
//! block the main loop.
//!
//! Contract: labs/reaper/README.md. Each line on stdin is a command; for each child
//! reaped, one line `<pid> exit <code>` or `<pid> signal <number>` on fd 3; at
//! end-of-file, reap the rest and exit 0.
//!
//! The shape: SIGCHLD's handler writes a byte to a pipe (the self-pipe trick), and the
//! main loop sleeps in poll() on stdin and that pipe — so it wakes for a new line or a
//! dead child, and never burns the CPU or blocks in waitpid.
//! Grade: cargo run -p labs --bin grade -- reaper --submission labs/reaper/solution.rs

use std::error::Error;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, execvp, fork, pipe2, read};

/// The self-pipe's write end, for the handler (a signal handler can only read statics).
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_signal: libc::c_int) {
    let fd = WAKE_WRITE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe
    // (a wake-up already pending) makes it fail instead of hanging the handler.
    unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
}

fn main() -> Result<(), Box<dyn Error>> {
    // Everything that decides how SIGCHLD is received is in place before the first child.
    let (wake_read, wake_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    WAKE_WRITE.store(wake_write.as_raw_fd(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP, // wake for deaths, not for stops
        SigSet::empty(),
    );
    // SAFETY: the handler only loads an atomic and calls write(2).
    unsafe { sigaction(Signal::SIGCHLD, &action) }?;
    // SAFETY: the grader opened fd 3 for us (the contract); nothing else owns it.
    let mut report = unsafe { File::from_raw_fd(3) };
    let stdin = std::io::stdin();
    let (mut input_open, mut running, mut pending) = (true, 0usize, Vec::new());

    while input_open || running > 0 {
        let mut fds = vec![PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue, // SIGCHLD arrived: loop and reap
            Err(error) => return Err(error.into()),
            Ok(_) => {}
        }
        let line_ready = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|events| !events.is_empty());
        let mut drained = [0u8; 64];
        while let Ok(1..) = read(&wake_read, &mut drained) {}
        // ANCHOR: reap
        // One SIGCHLD can stand for many children: reap until none is left to reap.
        loop {
            let line = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => format!("{pid} exit {code}\n"),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    format!("{pid} signal {}\n", signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(error) => return Err(error.into()),
            };
            report.write_all(line.as_bytes())?;
            running -= 1;
        }
        // ANCHOR_END: reap
        if line_ready {
            let mut buffer = [0u8; 4096];
            let count = read(&stdin, &mut buffer)?;
            input_open = count > 0;
            pending.extend_from_slice(&buffer[..count]);
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                running += usize::from(start(&line)?);
            }
        }
    }
    Ok(())
}

/// Forks a child that runs the command `line` names; false for an empty line.
fn start(line: &[u8]) -> Result<bool, Box<dyn Error>> {
    let words: Vec<CString> = String::from_utf8_lossy(line)
        .split_whitespace()
        .map(|word| CString::new(word).expect("a line from read has no NUL"))
        .collect();
    let Some(program) = words.first() else {
        return Ok(false);
    };
    // SAFETY: single-threaded; the child only calls execvp and, if that fails, _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let _ = execvp(program, &words);
            // SAFETY: _exit ends the child without running the parent's atexit or flushes.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { .. } => Ok(true),
    }
}
