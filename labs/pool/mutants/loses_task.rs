//! pool — mutant: a killed worker's task is lost.
//!
//! The mistake: when a worker dies the pool forks a new one (the pool stays at W), but
//! forgets the task the dead worker held, so that task's result never reaches the sink.
//! Loses exactly-once.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe, pipe2, read};

type Task = (u32, u64);

/// The write end of the self-pipe: the signal handler's only way to talk to the loop.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the descriptor is the self-pipe's
    // non-blocking write end, so the handler never blocks (a full pipe loses a byte
    // that the loop does not need: one byte already wakes it).
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::Relaxed),
            (&raw const byte).cast(),
            1,
        )
    };
}

fn handle(signal: Signal, handler: SigHandler) -> nix::Result<()> {
    let flags = SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP;
    // SAFETY: the handler only calls write(2) (above) or is SIG_DFL.
    unsafe { sigaction(signal, &SigAction::new(handler, flags, SigSet::empty())) }.map(drop)
}

struct Worker {
    tasks: File,         // the write end of this worker's task pipe
    holds: Option<Task>, // the task it works on, until it says done
}

struct Pool {
    workers: BTreeMap<Pid, Worker>,
    queue: VecDeque<Task>,
    sink: File,
    done_write: OwnedFd,
}

impl Pool {
    fn spawn(&mut self) -> Result<(), Box<dyn Error>> {
        let (task_read, task_write) = pipe()?;
        // SAFETY: single-threaded; the child resets its signals and runs the worker loop.
        match unsafe { fork() }? {
            ForkResult::Child => {
                let _ = handle(Signal::SIGTERM, SigHandler::SigDfl);
                let _ = handle(Signal::SIGCHLD, SigHandler::SigDfl);
                let code = match work(task_read, &self.sink, &self.done_write) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                let tasks = File::from(task_write);
                self.workers.insert(child, Worker { tasks, holds: None });
            }
        }
        Ok(())
    }

    /// Gives queued tasks to idle workers.
    fn dispatch(&mut self) -> Result<(), Box<dyn Error>> {
        for worker in self.workers.values_mut() {
            if worker.holds.is_none() {
                let Some(task) = self.queue.pop_front() else {
                    break;
                };
                writeln!(worker.tasks, "{} {}", task.0, task.1)?;
                worker.holds = Some(task);
            }
        }
        Ok(())
    }

    /// Reaps every dead worker; its task, if it held one, goes back to the queue's front.
    fn reap(&mut self) -> Result<(), Box<dyn Error>> {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if self.workers.remove(&pid).is_some() {
                        self.spawn()?; // the mistake: the task it held is forgotten
                    }
                }
            }
        }
    }
}

/// A worker: reads tasks from its pipe, sleeps each one's time, writes the result.
fn work(tasks: OwnedFd, mut sink: &File, done: &OwnedFd) -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    for line in BufReader::new(File::from(tasks)).lines() {
        let line = line?;
        let mut fields = line.split(' ');
        let (Some(id), Some(ms)) = (fields.next(), fields.next()) else {
            continue;
        };
        std::thread::sleep(Duration::from_millis(ms.parse()?));
        sink.write_all(format!("{id} {me}\n").as_bytes())?; // one write: O_APPEND keeps it whole
        nix::unistd::write(done, format!("{me} {id}\n").as_bytes())?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let count: usize = std::env::var("PROCLAB_WORKERS")?.parse()?;
    let sink = File::options()
        .append(true)
        .open(std::env::var("PROCLAB_SINK")?)?;
    let (signal_read, signal_write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    SIGNAL_PIPE.store(signal_write.as_raw_fd(), Ordering::Relaxed);
    handle(Signal::SIGCHLD, SigHandler::Handler(on_signal))?;
    handle(Signal::SIGTERM, SigHandler::Handler(on_signal))?;
    let (done_read, done_write) = pipe()?;
    let mut pool = Pool {
        workers: BTreeMap::new(),
        queue: VecDeque::new(),
        sink,
        done_write,
    };
    for _ in 0..count {
        pool.spawn()?;
    }
    let stdin = std::io::stdin();
    let (mut stdin_open, mut input, mut done_lines) = (true, Vec::new(), Vec::new());
    loop {
        let mut fds = vec![
            PollFd::new(signal_read.as_fd(), PollFlags::POLLIN),
            PollFd::new(done_read.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue; // EINTR
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
        let (signals, done, more) = (
            ready(&fds[0]),
            ready(&fds[1]),
            fds.get(2).is_some_and(ready),
        );
        drop(fds);
        let mut buffer = [0u8; 4096];
        if signals {
            let count = read(&signal_read, &mut buffer).unwrap_or(0);
            if buffer[..count].contains(&(Signal::SIGTERM as u8)) {
                break;
            }
            pool.reap()?;
        }
        if done {
            let count = read(&done_read, &mut buffer)?;
            done_lines.extend_from_slice(&buffer[..count]);
            while let Some(end) = done_lines.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = done_lines.drain(..=end).collect();
                let pid = String::from_utf8_lossy(&line)
                    .split(' ')
                    .next()
                    .and_then(|pid| pid.parse().ok());
                if let Some(worker) = pid.and_then(|pid| pool.workers.get_mut(&Pid::from_raw(pid)))
                {
                    worker.holds = None;
                }
            }
        }
        if more {
            let count = read(&stdin, &mut buffer)?;
            stdin_open = count > 0; // at end-of-file: finish the tasks, wait for SIGTERM
            input.extend_from_slice(&buffer[..count]);
            while let Some(end) = input.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = input.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                let mut fields = text.split_whitespace();
                if let (Some(Ok(id)), Some(Ok(ms))) =
                    (fields.next().map(str::parse), fields.next().map(str::parse))
                {
                    pool.queue.push_back((id, ms));
                }
            }
        }
        pool.dispatch()?;
    }
    // SIGTERM: end every worker, reap them all, exit 0.
    handle(Signal::SIGCHLD, SigHandler::SigDfl)?;
    for pid in pool.workers.keys() {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    for pid in pool.workers.keys() {
        let _ = waitpid(*pid, None);
    }
    Ok(())
}
