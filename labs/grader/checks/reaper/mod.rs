//! reaper — the program starts the children the grader names and reaps each as it ends.
//!
//! Contract (labs/reaper/README.md): each line on stdin is a command to run as a child
//! (words split on spaces, run with execvp); for each child it reaps it writes
//! `<pid> exit <code>` or `<pid> signal <number>` on fd 3; at end-of-file on stdin it
//! reaps the rest and exits 0.
//!
//! The grader sees: the children in /proc/<pid>/task/*/children, their state (Z) every
//! few ms, the program's wait channel and CPU time, and the lines on its own pipe (fd 3).
//! Faults it injects: signals that kill children, and a burst — twelve children exit at
//! once while the program is stopped (SIGSTOP), so their SIGCHLDs merge into one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::Findings;
use crate::observe;
use crate::session::Session;
use watch::{Watch, check_statuses, check_zombies};

mod phases;
mod plan;
mod watch;

pub use plan::answers;
use plan::{Fate, Plan, plan};

pub(super) const ZOMBIE_LIMIT: Duration = Duration::from_millis(200);
const START_LIMIT: Duration = Duration::from_millis(300);
pub(super) const BURST: usize = 12;

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let plan = plan(seed);
    let mut findings = Findings::default();
    let helper = session.helper.display().to_string();
    let fifo = session.scratch.join("burst.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    // O_RDWR: the FIFO has a writer (the grader) until the grader closes it.
    let burst_writer = nix::fcntl::open(
        &fifo,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let write_fd = report_write.as_raw_fd();
    let mut command = Command::new(program);
    command.stdin(Stdio::piped()).stdout(Stdio::null());
    // SAFETY: between fork and exec the child only calls dup2 and fcntl, which are
    // async-signal-safe; it makes the report pipe its fd 3, without close-on-exec.
    unsafe {
        command.pre_exec(move || {
            if write_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(write_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = session.spawn(&mut command, 1)?;
    drop(report_write);
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let program_pid = child.id() as i32;
    let mut watch = Watch {
        program: program_pid,
        fifo: fifo.display().to_string(),
        seen: BTreeMap::new(),
        reports: BTreeMap::new(),
        report_pipe: report_read,
        pending: Vec::new(),
        cpu_ns: 0,
    };
    let mut send = |line: String| stdin.write_all(format!("{line}\n").as_bytes());

    // The holder, then the trickle: each new child must start while the holder still runs.
    let _ = send(format!("{helper} hold --id 0"));
    watch.until(session, &plan, Duration::from_millis(800), |watch| {
        watch.pid_of(0).is_some()
    });
    let mut written = BTreeMap::new();
    for id in 1..=6u32 {
        let fate = plan.children[&id].0;
        let line = match fate {
            Fate::Exit(code) => format!(
                "{helper} exit {code} --after {} --id {id}",
                plan.children[&id].1
            ),
            Fate::Killed(_) => format!("{helper} hold --id {id}"),
        };
        let _ = send(line);
        written.insert(id, Instant::now());
        watch.until(session, &plan, Duration::from_millis(40), |_| false);
    }
    let started = |watch: &Watch, id: u32| watch.pid_of(id).map(|pid| watch.seen[&pid].started);
    watch.until(session, &plan, START_LIMIT, |watch| {
        (1..=6).all(|id| started(watch, id).is_some())
    });
    let wchan = observe::wchan(program_pid);
    let holder = watch.pid_of(0);
    for id in 1..=6u32 {
        let late =
            started(&watch, id).is_none_or(|at| at.duration_since(written[&id]) > START_LIMIT);
        if late {
            let holder = holder.map_or("the first child".to_string(), |pid| format!("child {pid}"));
            let asleep = if wchan.contains("wait") {
                format!(
                    "it was asleep in the kernel at {wchan}: your main loop is blocked in waitpid(); use WNOHANG and wait only when SIGCHLD says a child ended"
                )
            } else {
                format!("it was at wchan \"{wchan}\": read the next line while children run")
            };
            findings.fail(
                "no-blocking",
                format!(
                    "line {id} started no child within {} ms while {holder} ran; {asleep}",
                    START_LIMIT.as_millis()
                ),
            );
        }
    }
    findings.pass("no-blocking");
    if let (Some(pid), Some((Fate::Killed(signal), _))) = (holder, plan.children.get(&0)) {
        let _ = kill(Pid::from_raw(pid), *signal);
    }
    let trickle_done = |watch: &Watch| {
        (0..=6).all(|id| {
            watch
                .pid_of(id)
                .is_some_and(|pid| watch.seen[&pid].gone.is_some())
        })
    };
    watch.until(session, &plan, Duration::from_secs(3), trickle_done);
    check_statuses(session, &mut watch, &plan, 0..=6, "statuses", &mut findings);
    check_zombies(&watch, 0..=6, &mut findings);

    phases::burst(
        session,
        &mut watch,
        &plan,
        &helper,
        &mut stdin,
        burst_writer,
        &mut findings,
    );
    phases::end_of_input(session, &mut watch, stdin, &mut findings);
    Ok(findings)
}
