//! shell — your program: a job-control shell on a terminal.
//!
//! The contract is in labs/shell/README.md (and the book's Labs part). In short:
//! - print the prompt `tsh> ` and read a line from the terminal (stdin); Ctrl-D ends it;
//! - `cmd args…` runs in the foreground, `cmd args… &` in the background, each job in a
//!   process group of its own; the foreground job's group owns the terminal;
//! - Ctrl-C and Ctrl-Z reach the foreground job only (the kernel does that once the job
//!   owns the terminal); the shell itself never dies or stops of them;
//! - builtins: `jobs`, `fg %N`, `bg %N`, `quit`; every job is reaped as it ends;
//! - at end-of-file or `quit`: end every job, reap them all, exit 0.
//!
//! This starter prompts, runs every line in the foreground and waits for it, and quits.
//! It has no jobs: its children share its process group, so Ctrl-C kills the shell too.
//! Grade it:  cargo run -p labs --bin grade -- shell --submission labs/shell/starter.rs
//! and `grade hint shell` when you are stuck.

use std::error::Error;
use std::ffi::CString;
use std::io::{BufRead, Write};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, execvp, fork};

fn main() -> Result<(), Box<dyn Error>> {
    // TODO: ignore SIGINT, SIGQUIT, SIGTSTP, SIGTTIN and SIGTTOU in the shell: the
    //       terminal sends them to its foreground group, and the shell must survive them.
    // TODO: decide how SIGCHLD reaches you (a handler that writes a byte to a pipe), so
    //       that the main loop can poll() the terminal and that pipe, and reap a job that
    //       ends while the shell waits at the prompt.
    let terminal = std::io::stdin();
    let mut input = String::new();
    loop {
        print!("tsh> ");
        std::io::stdout().flush()?;
        input.clear();
        if terminal.lock().read_line(&mut input)? == 0 {
            break; // Ctrl-D at the start of a line: end-of-file
        }
        let mut words: Vec<&str> = input.split_whitespace().collect();
        let background = words.last() == Some(&"&");
        if background {
            words.pop();
        }
        match words.first().copied() {
            None => {}
            Some("quit") => break,
            // TODO: a job table (numbers 1, 2, … the smallest one free), and the builtins.
            Some(builtin @ ("jobs" | "fg" | "bg")) => println!("{builtin}: not yet"),
            Some(_) => {
                let Some(pid) = start(&words) else { continue };
                if !background {
                    // TODO: give the job the terminal (tcsetpgrp), wait until it stops or
                    //       ends (WUNTRACED) without blocking the rest, then take the
                    //       terminal back before the next prompt.
                    let _ = waitpid(pid, None);
                }
                // TODO: a background job must be reaped as soon as it ends.
            }
        }
    }
    // TODO: end every job left (SIGHUP, then SIGCONT, to its group), reap them all.
    Ok(())
}

/// Forks a child that runs `words`.
fn start(words: &[&str]) -> Option<Pid> {
    let argv: Vec<CString> = words.iter().filter_map(|w| CString::new(*w).ok()).collect();
    // SAFETY: single-threaded; the child only calls execvp and, if that fails, _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // TODO: setpgid(0, 0); for a foreground job tcsetpgrp(0, getpgrp()); restore
            //       the signals the shell ignores to SIG_DFL (an ignored signal stays
            //       ignored across exec).
            let _ = execvp(&argv[0], &argv);
            // SAFETY: _exit ends the child without running the shell's atexit or flushes.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            // TODO: setpgid(child, child) here too: whichever of the two runs first wins.
            Some(child)
        }
        Err(error) => {
            println!("fork: {error}");
            None
        }
    }
}
