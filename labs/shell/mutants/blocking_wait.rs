//! shell mutant blocking-wait — the shell without a SIGCHLD handler: it sleeps in read()
//! at the prompt and reaps only in a blocking waitpid while a foreground job runs (CS:APP's
//! first tsh). Job control works; a background job that ends while the shell waits at
//! the prompt stays a zombie until the next foreground job or the end.
//! Must lose: see labs.toml.

use std::collections::BTreeMap;
use std::error::Error;
use std::ffi::CString;
use std::io::Write;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, killpg, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execvp, fork, getpgrp, setpgid, tcsetpgrp};

/// The signals the terminal sends for keys, or to a background group that touches it.
const JOB_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

struct Job {
    pgid: Pid,
    stopped: bool,
    line: String,
}

fn main() -> Result<(), Box<dyn Error>> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs nothing.
    unsafe {
        for signal in JOB_SIGNALS {
            sigaction(signal, &ignore)?;
        }
    }
    let (terminal, shell) = (std::io::stdin(), getpgrp());
    let mut jobs: BTreeMap<u32, Job> = BTreeMap::new();
    let mut foreground: Option<u32> = None;
    let mut input = String::new();
    loop {
        // MUTANT: no SIGCHLD handler; it reaps only here, in a blocking waitpid, while a
        // foreground job runs — a background job that ends at the prompt stays a zombie.
        while foreground.is_some() {
            wait_blocking(&mut jobs, &mut foreground);
        }
        let _ = tcsetpgrp(&terminal, shell);
        print!("tsh> ");
        std::io::stdout().flush()?;
        input.clear();
        if terminal.read_line(&mut input)? == 0 {
            break; // Ctrl-D
        }
        let line = input.trim().to_string();
        if line == "quit" {
            break;
        }
        foreground = command(&line, &mut jobs, &terminal);
    }
    for job in jobs.values() {
        let _ = killpg(job.pgid, Signal::SIGHUP);
        let _ = killpg(job.pgid, Signal::SIGCONT); // a stopped job dies only once continued
    }
    while waitpid(None, None).is_ok() {} // until ECHILD: every job reaped
    Ok(())
}

/// Runs one line; returns the job now in the foreground, if any.
fn command(line: &str, jobs: &mut BTreeMap<u32, Job>, terminal: &std::io::Stdin) -> Option<u32> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let background = words.last() == Some(&"&");
    if background {
        words.pop();
    }
    let number = |word: Option<&&str>| word?.trim_start_matches('%').parse::<u32>().ok();
    match words.first().copied() {
        None => None,
        Some("jobs") => {
            for (number, job) in jobs.iter() {
                let state = if job.stopped { "Stopped" } else { "Running" };
                println!("[{number}] ({}) {state} {}", job.pgid, job.line);
            }
            None
        }
        Some(which @ ("fg" | "bg")) => {
            let Some(number) = number(words.get(1)).filter(|n| jobs.contains_key(n)) else {
                println!("{which}: no such job");
                return None;
            };
            let job = jobs.get_mut(&number)?;
            if which == "fg" {
                let _ = tcsetpgrp(terminal, job.pgid);
            }
            let _ = killpg(job.pgid, Signal::SIGCONT);
            job.stopped = false;
            (which == "fg").then_some(number)
        }
        Some(_) => {
            let number = (1..).find(|n| !jobs.contains_key(n))?;
            let pid = start(&words, !background, terminal)?;
            if background {
                println!("[{number}] ({pid}) {line}");
            }
            let line = line.to_string();
            jobs.insert(
                number,
                Job {
                    pgid: pid,
                    stopped: false,
                    line,
                },
            );
            (!background).then_some(number)
        }
    }
}

/// Forks a job in a process group of its own; the foreground one gets the terminal.
fn start(words: &[&str], foreground: bool, terminal: &std::io::Stdin) -> Option<Pid> {
    let argv: Vec<CString> = words.iter().filter_map(|w| CString::new(*w).ok()).collect();
    // SAFETY: single-threaded; the child calls only setpgid, tcsetpgrp, sigaction, execvp
    // and _exit before it becomes the command.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if foreground {
                let _ = tcsetpgrp(terminal, getpgrp()); // SIGTTOU is still ignored here
            }
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for signal in JOB_SIGNALS.into_iter().chain([Signal::SIGCHLD]) {
                // SAFETY: SIG_DFL runs nothing; an ignored signal would stay so across exec.
                let _ = unsafe { sigaction(signal, &default) };
            }
            let _ = execvp(&argv[0], &argv);
            // SAFETY: _exit ends the child without running the shell's atexit or flushes.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = setpgid(child, child); // also here: whichever runs first wins
            if foreground {
                let _ = tcsetpgrp(terminal, child);
            }
            Some(child)
        }
        Err(error) => {
            println!("fork: {error}");
            None
        }
    }
}

/// Sleeps in waitpid until some job changes, and notes it.
fn wait_blocking(jobs: &mut BTreeMap<u32, Job>, foreground: &mut Option<u32>) {
    let flags = WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED; // MUTANT: no WNOHANG
    {
        let (pid, stopped) = match waitpid(None, Some(flags)) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => (pid, None),
            Ok(WaitStatus::Stopped(pid, _)) => (pid, Some(true)),
            Ok(WaitStatus::Continued(pid)) => (pid, Some(false)),
            _ => return, // StillAlive, or ECHILD
        };
        let Some((&number, job)) = jobs.iter_mut().find(|(_, job)| job.pgid == pid) else {
            return;
        };
        match stopped {
            None => {
                jobs.remove(&number);
            }
            Some(stopped) => job.stopped = stopped,
        }
        if stopped != Some(false) && *foreground == Some(number) {
            *foreground = None;
            if stopped == Some(true) {
                println!("\n[{number}] Stopped {}", jobs[&number].line);
            }
        }
    }
}
