//! pipeline — your program: run `a | b | c` from the stages named on the command line.
//!
//! The contract is in labs/pipeline/README.md (and the book's Labs part). In short:
//! - each argument is one stage's command line (words split on spaces);
//! - the first stage reads your stdin, the last writes your stdout, and stage i's stdout
//!   is stage i+1's stdin (a pipe between each pair);
//! - each stage holds only descriptors 0, 1 and 2;
//! - wait for every stage and exit with the last stage's status.
//!
//! This starter runs only the first stage. Grade it:
//!   cargo run -p labs --bin grade -- pipeline --submission labs/pipeline/starter.rs

use std::error::Error;
use std::ffi::CString;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, execvp, fork};

fn main() -> Result<(), Box<dyn Error>> {
    let stages: Vec<Vec<CString>> = std::env::args()
        .skip(1)
        .map(|stage| words(&stage))
        .collect();
    let Some(first) = stages.first() else {
        return Ok(());
    };
    // TODO: one child per stage, not just the first. Between stage i and i+1 make a
    //       pipe(); in the child, dup2 the ends onto 0 and 1, then close the originals.
    // TODO: in the parent, close each pipe end once the child that needs it has it —
    //       a reader sees end-of-file only when *every* write end is closed.
    // SAFETY: single-threaded; the child only calls execvp and _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let _ = execvp(&first[0], first);
            // SAFETY: _exit ends the child without running the parent's atexit or flushes.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            // TODO: wait for every stage; exit with the last one's status.
            waitpid(child, None)?;
        }
    }
    Ok(())
}

fn words(stage: &str) -> Vec<CString> {
    stage
        .split_whitespace()
        .map(|word| CString::new(word).expect("an argument has no NUL"))
        .collect()
}
