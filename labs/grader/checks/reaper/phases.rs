//! phases — the reaper lab's last two phases: the burst (twelve children exit while the
//! program is stopped, so their SIGCHLDs merge) and the end of input.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::ChildStdin;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::watch::{Watch, check_statuses};
use super::{BURST, Plan, ZOMBIE_LIMIT};
use crate::checks::Findings;
use crate::observe;
use crate::session::Session;

pub fn burst(
    session: &mut Session,
    watch: &mut Watch,
    plan: &Plan,
    helper: &str,
    stdin: &mut ChildStdin,
    burst_writer: OwnedFd,
    findings: &mut Findings,
) {
    let program_pid = watch.program;
    let mut send = |line: String| stdin.write_all(format!("{line}\n").as_bytes());
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
    if !watch.until(session, plan, Duration::from_secs(1), all_waiting) {
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
    watch.until(session, plan, Duration::from_secs(1), |watch| {
        burst_pids
            .iter()
            .all(|pid| watch.seen[pid].zombie_since.is_some())
    });
    let _ = kill(target, Signal::SIGCONT);
    let continued = Instant::now();
    watch.until(session, plan, ZOMBIE_LIMIT, |watch| {
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
    check_statuses(session, watch, plan, burst_ids(), "burst", findings);
}

pub fn end_of_input(
    session: &mut Session,
    watch: &mut Watch,
    stdin: ChildStdin,
    findings: &mut Findings,
) {
    let program_pid = watch.program;
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
}
