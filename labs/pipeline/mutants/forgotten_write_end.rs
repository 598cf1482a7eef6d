//! pipeline — MUTANT forgotten-write-end: the parent keeps every pipe's write end.
//!
//! The classic mistake: the children are careful (the pipes are O_CLOEXEC, so each stage
//! holds only 0, 1, 2), but the parent never closes its own copies of the write ends
//! until it has waited. A reader sees end-of-file only when every write end is closed,
//! so the second stage waits forever, and so does the parent. All the bytes arrive;
//! the end never does. It must lose `eof` (and `reaped`).

use std::error::Error;
use std::ffi::CString;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, dup2_stdin, dup2_stdout, execvp, fork, pipe2};

fn main() -> Result<(), Box<dyn Error>> {
    let stages: Vec<Vec<CString>> = std::env::args()
        .skip(1)
        .map(|stage| words(&stage))
        .collect();
    let mut stdin_of_next: Option<OwnedFd> = None;
    let mut kept_write_ends = Vec::new();
    let mut pids = Vec::new();
    for (index, argv) in stages.iter().enumerate() {
        let last = index + 1 == stages.len();
        let to_next = if last {
            None
        } else {
            Some(pipe2(OFlag::O_CLOEXEC)?)
        };
        // SAFETY: single-threaded; the child only calls dup2, execvp and _exit.
        match unsafe { fork() }? {
            ForkResult::Child => {
                if let Some(read_end) = &stdin_of_next {
                    dup2_stdin(read_end)?;
                }
                if let Some((_, write_end)) = &to_next {
                    dup2_stdout(write_end)?;
                }
                let _ = execvp(&argv[0], argv);
                // SAFETY: _exit ends the child without running the parent's atexit or flushes.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                pids.push(child);
                stdin_of_next = to_next.map(|(read_end, write_end)| {
                    kept_write_ends.push(write_end); // the bug: the next stage never sees EOF
                    read_end
                });
            }
        }
    }
    for pid in &pids {
        waitpid(*pid, None)?;
    }
    drop(kept_write_ends);
    Ok(())
}

fn words(stage: &str) -> Vec<CString> {
    stage
        .split_whitespace()
        .map(|word| CString::new(word).expect("an argument has no NUL"))
        .collect()
}
