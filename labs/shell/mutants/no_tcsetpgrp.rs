//! shell mutant no-tcsetpgrp — the solution without tcsetpgrp: each job has its own
//! group, but the terminal's foreground group stays the shell's. Ctrl-C and Ctrl-Z reach
//! only the shell (which ignores them); the foreground job never sees them.
//! Must lose: see labs.toml.

use std::collections::BTreeMap;
use std::error::Error;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, killpg, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execvp, fork, pipe2, read, setpgid};

/// The signals the terminal sends for keys, or to a background group that touches it.
const JOB_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_signal: libc::c_int) {
    // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking.
    unsafe { libc::write(WAKE_WRITE.load(Ordering::Relaxed), b"!".as_ptr().cast(), 1) };
}

struct Job {
    pgid: Pid,
    stopped: bool,
    line: String,
}

fn main() -> Result<(), Box<dyn Error>> {
    let (wake_read, wake_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    WAKE_WRITE.store(wake_write.as_raw_fd(), Ordering::Relaxed);
    let on_child = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART, // no SA_NOCLDSTOP: a stop is news too
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only loads an atomic and calls write(2); SIG_IGN runs nothing.
    unsafe {
        sigaction(Signal::SIGCHLD, &on_child)?;
        for signal in JOB_SIGNALS {
            sigaction(signal, &ignore)?;
        }
    }
    let terminal = std::io::stdin();
    let mut jobs: BTreeMap<u32, Job> = BTreeMap::new();
    let mut foreground: Option<u32> = None;
    let (mut pending, mut prompted) = (Vec::new(), false);
    loop {
        reap(&mut jobs, &mut foreground);
        if foreground.is_none() {
            // MUTANT: never takes the terminal back (it never gave it away).
        }
        let ready = foreground.is_none();
        let end = pending.iter().position(|&byte| byte == b'\n');
        if let (true, Some(end)) = (ready, end) {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if line == "quit" {
                break;
            }
            foreground = command(&line, &mut jobs, &terminal);
            prompted = false;
            continue;
        }
        if ready && !prompted {
            print!("tsh> ");
            std::io::stdout().flush()?;
            prompted = true;
        }
        let mut fds = vec![PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
        if ready {
            fds.push(PollFd::new(terminal.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) | Ok(_) => {}
            Err(error) => return Err(error.into()),
        }
        let typed = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        while let Ok(1..) = read(&wake_read, &mut [0u8; 64]) {}
        if typed {
            let mut buffer = [0u8; 1024];
            match read(&terminal, &mut buffer)? {
                0 => break, // Ctrl-D at the start of a line: end-of-file
                count => pending.extend_from_slice(&buffer[..count]),
            }
        }
    }
    // ANCHOR: finish
    for job in jobs.values() {
        let _ = killpg(job.pgid, Signal::SIGHUP);
        let _ = killpg(job.pgid, Signal::SIGCONT); // a stopped job dies only once continued
    }
    while waitpid(None, None).is_ok() {} // until ECHILD: every job reaped
    // ANCHOR_END: finish
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
            // MUTANT: `fg` does not give the job the terminal.
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

// ANCHOR: start
/// Forks a job in a process group of its own; the foreground one gets the terminal.
fn start(words: &[&str], _foreground: bool, _terminal: &std::io::Stdin) -> Option<Pid> {
    let argv: Vec<CString> = words.iter().filter_map(|w| CString::new(*w).ok()).collect();
    // SAFETY: single-threaded; the child calls only setpgid, tcsetpgrp, sigaction, execvp
    // and _exit before it becomes the command.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            // MUTANT: the foreground child does not take the terminal.
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
            // MUTANT: nor does the parent give it.
            Some(child)
        }
        Err(error) => {
            println!("fork: {error}");
            None
        }
    }
}
// ANCHOR_END: start

/// Reaps and notes every change: ended jobs leave the table, stopped ones leave the
/// foreground.
fn reap(jobs: &mut BTreeMap<u32, Job>, foreground: &mut Option<u32>) {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED;
    loop {
        let (pid, stopped) = match waitpid(None, Some(flags)) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => (pid, None),
            Ok(WaitStatus::Stopped(pid, _)) => (pid, Some(true)),
            Ok(WaitStatus::Continued(pid)) => (pid, Some(false)),
            _ => return, // StillAlive, or ECHILD
        };
        let Some((&number, job)) = jobs.iter_mut().find(|(_, job)| job.pgid == pid) else {
            continue;
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
