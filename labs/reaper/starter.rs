//! reaper — your program: start the children stdin names, reap each as it ends.
//!
//! The contract is in labs/reaper/README.md (and the book's Labs part). In short:
//! - each line on stdin is a command (words split on spaces): run it as a child;
//! - for each child you reap, write one line on fd 3: `<pid> exit <code>` or
//!   `<pid> signal <number>`;
//! - never block the main loop: a new line must start its child while others run;
//! - at end-of-file on stdin, reap every child that is left and exit 0.
//!
//! This starter starts the children and never reaps them. Grade it:
//!   cargo run -p labs --bin grade -- reaper --submission labs/reaper/starter.rs
//! and `grade hint reaper` when you are stuck.

use std::error::Error;
use std::ffi::CString;
use std::fs::File;
use std::io::BufRead;
use std::os::fd::FromRawFd;

use nix::unistd::{ForkResult, execvp, fork};

fn main() -> Result<(), Box<dyn Error>> {
    // SAFETY: the grader opened fd 3 for us (the contract); nothing else owns it.
    let _report = unsafe { File::from_raw_fd(3) };
    // TODO: before the first child can die, decide how SIGCHLD reaches you
    //       (sigaction with a handler that writes to a pipe, or signalfd).
    for line in std::io::stdin().lock().lines() {
        start(&line?)?;
        // TODO: this loop blocks in read(); a child that dies meanwhile is not reaped.
        //       Wait for "a line OR a dead child" instead (poll on stdin and your pipe).
        // TODO: when a child has died, reap it with waitpid(-1, WNOHANG) — all of them,
        //       until it returns 0 — and write its line on fd 3.
    }
    // TODO: end of input: reap every child that is left before you exit.
    Ok(())
}

/// Forks a child that runs the command `line` names; false for an empty line.
fn start(line: &str) -> Result<bool, Box<dyn Error>> {
    let words: Vec<CString> = line
        .split_whitespace()
        .map(|word| CString::new(word).expect("a line has no NUL"))
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
