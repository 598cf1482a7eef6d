//! watch — what the reaper lab's grader has seen of the program's children: sampled
//! from /proc every few milliseconds, with the lines the program wrote on fd 3; and the
//! verdicts decided from it (statuses, zombies).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::{Fate, Plan, ZOMBIE_LIMIT};
use crate::checks::Findings;
use crate::observe;
use crate::session::Session;

const REPORT_GRACE: Duration = Duration::from_secs(1);

/// What the grader has seen of one child.
pub struct Seen {
    pub id: u32,
    pub started: Instant,
    pub zombie_since: Option<Instant>,
    pub gone: Option<Instant>,
    pub signalled: bool,
}

pub struct Watch {
    pub program: i32,
    pub fifo: String,
    pub seen: BTreeMap<i32, Seen>,
    pub reports: BTreeMap<i32, String>,
    pub report_pipe: OwnedFd,
    pub pending: Vec<u8>,
    pub cpu_ns: u64,
}

impl Watch {
    /// One sample: new children, zombies, reaped children, lines on fd 3, CPU time.
    pub fn sample(&mut self, plan: &Plan) {
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

    /// Samples until each of `ids` that is gone has its line on fd 3, or 1 s passes: a
    /// program writes the line just after waitpid, so the grader can see the child gone
    /// before the line comes (under load, a scheduling slice or more).
    pub fn await_reports(&mut self, session: &mut Session, plan: &Plan, ids: &[u32]) {
        self.until(session, plan, REPORT_GRACE, |watch| {
            ids.iter().all(|&id| {
                watch.pid_of(id).is_none_or(|pid| {
                    watch.seen[&pid].gone.is_none() || watch.reports.contains_key(&pid)
                })
            })
        });
    }

    pub fn pid_of(&self, id: u32) -> Option<i32> {
        self.seen
            .iter()
            .find(|(_, seen)| seen.id == id)
            .map(|(pid, _)| *pid)
    }

    pub fn fifo_open_by(&self, pid: i32) -> bool {
        observe::fds(pid).iter().any(|fd| fd.target == self.fifo)
    }

    /// Samples until `done` holds or `timeout` passes.
    pub fn until(
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

pub fn id_of(pid: i32) -> u32 {
    let line = observe::cmdline(pid);
    line.split(" --id ")
        .nth(1)
        .and_then(|id| id.split(' ').next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Each child's line on fd 3 against the kernel's status, after waiting for late lines.
pub fn check_statuses(
    session: &mut Session,
    watch: &mut Watch,
    plan: &Plan,
    ids: impl Iterator<Item = u32>,
    check: &str,
    findings: &mut Findings,
) {
    let ids: Vec<u32> = ids.collect();
    watch.await_reports(session, plan, &ids);
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

pub fn check_zombies(watch: &Watch, ids: std::ops::RangeInclusive<u32>, findings: &mut Findings) {
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
