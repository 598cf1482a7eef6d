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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Findings;
use crate::observe;
use crate::seed::Rng;
use crate::session::Session;

const ZOMBIE_LIMIT: Duration = Duration::from_millis(200);
const START_LIMIT: Duration = Duration::from_millis(300);
const BURST: usize = 12;

#[derive(Clone, Copy)]
enum Fate {
    Exit(i32),
    Killed(Signal),
}

impl Fate {
    fn report(self) -> String {
        match self {
            Fate::Exit(code) => format!("exit {code}"),
            Fate::Killed(signal) => format!("signal {}", signal as i32),
        }
    }
}

/// Child 0 holds on until the trickle has started; 1..=6 end one by one; 100.. are the burst.
struct Plan {
    children: BTreeMap<u32, (Fate, u64)>, // id -> fate, and its life in ms (trickle)
}

fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let signals = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGKILL,
    ];
    let mut children = BTreeMap::new();
    children.insert(0, (Fate::Killed(*rng.pick(&signals[..5])), 0));
    for id in 1..=6u32 {
        let fate = if rng.range(0, 2) == 0 {
            Fate::Killed(*rng.pick(&signals))
        } else {
            Fate::Exit(rng.range(0, 120) as i32)
        };
        children.insert(id, (fate, 80 + 45 * u64::from(id) + rng.range(0, 15)));
    }
    for id in 100..100 + BURST as u32 {
        children.insert(id, (Fate::Exit(rng.range(1, 120) as i32), 0));
    }
    Plan { children }
}

pub fn answers(seed: u64) -> String {
    let mut out = format!("reaper, seed {seed}: the lines on fd 3, by child id\n");
    for (id, (fate, life)) in plan(seed).children {
        let role = match id {
            0 => "holds until the trickle has started, then killed".to_string(),
            100.. => "burst: exits with the others at once".to_string(),
            _ => format!("lives {life} ms"),
        };
        out += &format!("child {id:3}: <pid> {:10}  ({role})\n", fate.report());
    }
    out
}

/// What the grader has seen of one child.
struct Seen {
    id: u32,
    started: Instant,
    zombie_since: Option<Instant>,
    gone: Option<Instant>,
    signalled: bool,
}

struct Watch {
    program: i32,
    fifo: String,
    seen: BTreeMap<i32, Seen>,
    reports: BTreeMap<i32, String>,
    report_pipe: OwnedFd,
    pending: Vec<u8>,
    cpu_ns: u64,
}

impl Watch {
    /// One sample: new children, zombies, reaped children, lines on fd 3, CPU time.
    fn sample(&mut self, plan: &Plan) {
        let now = Instant::now();
        let live = observe::children(self.program);
        for stat in &live {
            let entry = self.seen.entry(stat.pid).or_insert_with(|| Seen {
                id: id_of(stat.pid),
                started: now,
                zombie_since: None,
                gone: None,
                signalled: false,
            });
            if entry.id == u32::MAX {
                // Between fork and exec the child still shows its parent's command line.
                entry.id = id_of(stat.pid);
                entry.started = now;
            }
            if stat.state == 'Z' && entry.zombie_since.is_none() {
                entry.zombie_since = Some(now);
            }
        }
        for (pid, seen) in self.seen.iter_mut() {
            if seen.gone.is_none() && !live.iter().any(|stat| stat.pid == *pid) {
                seen.gone = Some(now);
            }
            // The grader's faults: a child whose fate is a signal gets it when its life is up.
            if let Some((Fate::Killed(signal), life)) = plan.children.get(&seen.id) {
                if seen.id != 0
                    && !seen.signalled
                    && now >= seen.started + Duration::from_millis(*life)
                {
                    seen.signalled = kill(Pid::from_raw(*pid), *signal).is_ok();
                }
            }
        }
        let mut buffer = [0u8; 4096];
        while let Ok(count @ 1..) = nix::unistd::read(&self.report_pipe, &mut buffer) {
            self.pending.extend_from_slice(&buffer[..count]);
        }
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let mut words = line.split_whitespace();
            if let Some(Ok(pid)) = words.next().map(str::parse::<i32>) {
                self.reports
                    .entry(pid)
                    .or_insert_with(|| words.collect::<Vec<_>>().join(" "));
            }
        }
        if let Some(cpu) = observe::cpu_ns(self.program) {
            self.cpu_ns = cpu;
        }
    }

    fn pid_of(&self, id: u32) -> Option<i32> {
        self.seen
            .iter()
            .find(|(_, seen)| seen.id == id)
            .map(|(pid, _)| *pid)
    }

    fn fifo_open_by(&self, pid: i32) -> bool {
        observe::fds(pid).iter().any(|fd| fd.target == self.fifo)
    }

    /// Samples until `done` holds or `timeout` passes.
    fn until(
        &mut self,
        session: &mut Session,
        plan: &Plan,
        timeout: Duration,
        mut done: impl FnMut(&Watch) -> bool,
    ) -> bool {
        session.wait_for(timeout, |_| {
            self.sample(plan);
            done(self)
        })
    }
}

fn id_of(pid: i32) -> u32 {
    let line = observe::cmdline(pid);
    line.split(" --id ")
        .nth(1)
        .and_then(|id| id.split(' ').next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

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
    check_statuses(&watch, &plan, 0..=6, "statuses", &mut findings);
    check_zombies(&watch, 0..=6, &mut findings);

    // The burst: twelve children wait on the FIFO; the program is stopped, the FIFO
    // closed, so all twelve exit while the program cannot run: one SIGCHLD for twelve.
    for id in 100..100 + BURST as u32 {
        let _ = send(format!(
            "{helper} exit {} --wait {} --id {id}",
            plan.children[&id].0.report().trim_start_matches("exit "),
            watch.fifo
        ));
    }
    let burst_ids = || 100..100 + BURST as u32;
    let all_waiting = |watch: &Watch| {
        burst_ids().all(|id| watch.pid_of(id).is_some_and(|pid| watch.fifo_open_by(pid)))
    };
    if !watch.until(session, &plan, Duration::from_secs(1), all_waiting) {
        let count = burst_ids().filter(|&id| watch.pid_of(id).is_some()).count();
        findings.fail("burst", format!("only {count} of {BURST} burst children were running 1 s after their lines: start every child as soon as its line arrives"));
    }
    let target = Pid::from_raw(program_pid);
    let _ = kill(target, Signal::SIGSTOP);
    session.wait_for(Duration::from_millis(300), |_| {
        observe::stat(program_pid).is_none_or(|stat| stat.state == 'T')
    });
    drop(burst_writer);
    let burst_pids: Vec<i32> = burst_ids().filter_map(|id| watch.pid_of(id)).collect();
    watch.until(session, &plan, Duration::from_secs(1), |watch| {
        burst_pids
            .iter()
            .all(|pid| watch.seen[pid].zombie_since.is_some())
    });
    let _ = kill(target, Signal::SIGCONT);
    let continued = Instant::now();
    watch.until(session, &plan, ZOMBIE_LIMIT, |watch| {
        burst_pids.iter().all(|pid| watch.seen[pid].gone.is_some())
    });
    let stayed: Vec<i32> = burst_pids
        .iter()
        .copied()
        .filter(|pid| {
            watch.seen[pid]
                .gone
                .is_none_or(|gone| gone > continued + ZOMBIE_LIMIT)
        })
        .collect();
    if !stayed.is_empty() {
        findings.fail("burst", format!(
            "{} of {} children that exited together stayed zombies {} ms after your program continued (pids {:?}): one SIGCHLD can stand for many exits; loop waitpid(-1, WNOHANG) until it returns 0",
            stayed.len(), burst_pids.len(), ZOMBIE_LIMIT.as_millis(), &stayed[..stayed.len().min(4)]));
    }
    check_statuses(&watch, &plan, burst_ids(), "burst", &mut findings);

    // End of input: the program reaps what is left and exits 0, leaving nothing.
    drop(stdin);
    let eof = Instant::now();
    let busy = watch.cpu_ns as f64 / 1e9 / session.elapsed().as_secs_f64();
    if busy > 0.10 {
        findings.fail("no-busy-wait", format!("your program used the CPU {:.0}% of the time while it mostly waited: sleep in poll/read/sigsuspend instead of looping", busy * 100.0));
    }
    findings.pass("no-busy-wait");
    let exited = session.wait_for(Duration::from_millis(1500), |session| !session.running());
    let left = observe::children(std::process::id() as i32);
    if !exited {
        let zombies = observe::children(program_pid)
            .iter()
            .filter(|stat| stat.state == 'Z')
            .count();
        findings.fail("finish", format!("your program did not exit within 1.5 s of end-of-file on stdin ({zombies} of its children were zombies): after EOF, reap the rest and exit"));
    } else if !left.is_empty() {
        let pids: Vec<i32> = left.iter().map(|stat| stat.pid).collect();
        findings.fail("finish", format!("your program exited {} ms after EOF but left {} children unreaped (the grader adopted pids {pids:?}): wait for every child before you exit", eof.elapsed().as_millis(), pids.len()));
    } else if let Some(nix::sys::wait::WaitStatus::Exited(_, code @ 1..)) = session.status {
        findings.fail(
            "finish",
            format!("your program exited with status {code}: exit 0 once every child is reaped"),
        );
    } else if let Some(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) = session.status {
        findings.fail("finish", format!("your program was killed by {signal:?}"));
    }
    findings.pass("finish");
    Ok(findings)
}

fn check_statuses(
    watch: &Watch,
    plan: &Plan,
    ids: impl Iterator<Item = u32>,
    check: &str,
    findings: &mut Findings,
) {
    for id in ids {
        let Some(pid) = watch.pid_of(id) else {
            findings.fail(check, format!("child {id} (line `… --id {id}`) never started: run every line on stdin as a child"));
            continue;
        };
        let expected = plan.children[&id].0.report();
        match watch.reports.get(&pid) {
            Some(line) if *line == expected => {}
            Some(line) => findings.fail(check, format!("for child {pid} you wrote `{pid} {line}`, the kernel said `{pid} {expected}`: decode the status with WIFEXITED/WEXITSTATUS and WIFSIGNALED/WTERMSIG")),
            None => findings.fail(check, format!("child {pid} ended ({expected}) but no line `{pid} {expected}` came on fd 3: write one line per child you reap")),
        }
    }
    findings.pass(check);
}

fn check_zombies(watch: &Watch, ids: std::ops::RangeInclusive<u32>, findings: &mut Findings) {
    let now = Instant::now();
    for (pid, seen) in &watch.seen {
        if !ids.contains(&seen.id) {
            continue;
        }
        if let Some(since) = seen.zombie_since {
            let lasted = seen.gone.unwrap_or(now).duration_since(since);
            if lasted > ZOMBIE_LIMIT {
                findings.fail("no-zombie", format!("child {pid} stayed a zombie for {} ms: keep calling waitpid(-1, WNOHANG) until it returns 0 whenever SIGCHLD arrives", lasted.as_millis()));
            }
        }
    }
    findings.pass("no-zombie");
}
