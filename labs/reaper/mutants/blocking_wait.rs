//! reaper — MUTANT blocking-wait: waitpid(-1, 0) in the main loop.
//!
//! The classic mistake: read a line, start the child, then wait for "a child" with a
//! blocking waitpid. Every status is right and no zombie lingers, but while any child
//! runs the program reads no more lines: a child the grader asks for does not start
//! until another one dies. It must lose `no-blocking` and `burst`.

use std::error::Error;
use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, execvp, fork};

fn main() -> Result<(), Box<dyn Error>> {
    // SAFETY: the grader opened fd 3 for us (the contract); nothing else owns it.
    let mut report = unsafe { File::from_raw_fd(3) };
    let mut running = 0;
    for line in std::io::stdin().lock().lines() {
        running += usize::from(start(&line?)?);
        // The bug: this sleeps until some child ends, with the next line unread.
        if report_one(&mut report, waitpid(None, None))? {
            running -= 1;
        }
    }
    while running > 0 && report_one(&mut report, waitpid(None, None))? {
        running -= 1;
    }
    Ok(())
}

fn report_one(report: &mut File, status: nix::Result<WaitStatus>) -> Result<bool, Box<dyn Error>> {
    let line = match status {
        Ok(WaitStatus::Exited(pid, code)) => format!("{pid} exit {code}\n"),
        Ok(WaitStatus::Signaled(pid, signal, _)) => format!("{pid} signal {}\n", signal as i32),
        Ok(_) | Err(Errno::ECHILD) => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    report.write_all(line.as_bytes())?;
    Ok(true)
}

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
