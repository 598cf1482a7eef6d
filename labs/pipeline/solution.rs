//! pipeline — the answer key: run `a | b | c` from the stages named on the command line.
//!
//! Contract: labs/pipeline/README.md. Each argument is a stage's command line; stage i's
//! stdout is stage i+1's stdin; the first reads our stdin, the last writes our stdout;
//! each stage holds only 0, 1, 2; wait for all, exit with the last one's status.
//! Grade: cargo run -p labs --bin grade -- pipeline --submission labs/pipeline/solution.rs

use std::error::Error;
use std::ffi::CString;
use std::os::fd::OwnedFd;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, dup2_stdin, dup2_stdout, execvp, fork, pipe};

fn main() -> Result<(), Box<dyn Error>> {
    let stages: Vec<Vec<CString>> = std::env::args()
        .skip(1)
        .map(|stage| words(&stage))
        .collect();
    let mut stdin_of_next: Option<OwnedFd> = None; // the read end the next stage takes
    let mut pids = Vec::new();
    for (index, argv) in stages.iter().enumerate() {
        let last = index + 1 == stages.len();
        let to_next = if last { None } else { Some(pipe()?) }; // (read end, write end)
        // ANCHOR: fork_stage
        // SAFETY: single-threaded; the child only calls dup2, close, execvp and _exit.
        match unsafe { fork() }? {
            ForkResult::Child => {
                if let Some(read_end) = stdin_of_next.take() {
                    dup2_stdin(&read_end)?;
                    drop(read_end); // fd 0 is the copy this stage keeps
                }
                if let Some((read_end, write_end)) = to_next {
                    dup2_stdout(&write_end)?;
                    drop(write_end);
                    drop(read_end); // the next stage's end: not ours
                }
                let _ = execvp(&argv[0], argv);
                // SAFETY: _exit ends the child without running the parent's atexit or flushes.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                pids.push(child);
                drop(stdin_of_next.take()); // this stage has it now
                stdin_of_next = to_next.map(|(read_end, write_end)| {
                    drop(write_end); // the parent's copy: kept, the next stage would never see EOF
                    read_end
                });
            }
        }
        // ANCHOR_END: fork_stage
    }
    let mut status = 0;
    for pid in &pids {
        status = match waitpid(*pid, None)? {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
            _ => 1,
        };
    }
    std::process::exit(status); // the last stage's status, as a shell does
}

fn words(stage: &str) -> Vec<CString> {
    stage
        .split_whitespace()
        .map(|word| CString::new(word).expect("an argument has no NUL"))
        .collect()
}
