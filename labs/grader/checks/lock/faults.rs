//! faults — what the grader does to the lock's holder: stops it, and kills it.
//!
//! The holder is the thread id in the mutex's lock word. Before acting on it the grader
//! stops it (SIGSTOP) and reads the word again: a stopped holder cannot release the
//! mutex, so if the word still names it, the grader has caught it inside its section.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Plan;
use super::run::{Run, describe};
use crate::checks::Findings;
use crate::observe;
use crate::session::Session;

const STOPPED_FOR: Duration = Duration::from_millis(300);
/// CPU time all the waiters together may use while the holder is stopped.
const WAITERS_CPU_NS: u64 = 30_000_000;

/// Stops a worker caught holding the mutex and returns its pid (still stopped). With no
/// mutex ever seen taken (a program that never locks), any worker inside the section.
fn catch_holder(session: &mut Session, run: &mut Run) -> Option<i32> {
    run.watch(session, Duration::from_secs(1), |run| {
        run.region.counter() >= 1 && !run.workers().is_empty()
    });
    for _ in 0..50 {
        let workers = run.workers();
        let candidate = match run.region.owner() {
            Some(owner) => Some(owner),
            None if !run.seen_owner => workers.first().copied(),
            None => None,
        };
        let Some(victim) = candidate.filter(|pid| workers.contains(pid)) else {
            run.watch(session, Duration::from_millis(1), |_| false);
            continue;
        };
        let _ = kill(Pid::from_raw(victim), Signal::SIGSTOP);
        session.wait_for(Duration::from_millis(200), |_| {
            observe::stat(victim).is_none_or(|stat| stat.state == 'T')
        });
        let owner = run.region.owner();
        if owner == Some(victim) || (owner.is_none() && !run.seen_owner) {
            return Some(victim);
        }
        let _ = kill(Pid::from_raw(victim), Signal::SIGCONT);
    }
    None
}

/// sleep-while-stopped: with the holder stopped, the waiters must sleep in the kernel.
pub fn stop_holder(session: &mut Session, run: &mut Run, findings: &mut Findings) {
    let Some(victim) = catch_holder(session, run) else {
        findings.fail("sleep-while-stopped", format!(
            "in 50 tries the grader never caught a worker holding the mutex (its lock word named {:?}): lock the mutex in the region around every add", run.region.owner()));
        return;
    };
    let waiters: Vec<i32> = run
        .workers()
        .into_iter()
        .filter(|pid| *pid != victim)
        .collect();
    let before: Vec<u64> = waiters
        .iter()
        .map(|pid| observe::cpu_ns(*pid).unwrap_or(0))
        .collect();
    run.watch(session, STOPPED_FOR, |_| false);
    let used: u64 = waiters
        .iter()
        .zip(&before)
        .map(|(pid, before)| observe::cpu_ns(*pid).map_or(0, |after| after.saturating_sub(*before)))
        .sum();
    let seen: Vec<String> = waiters.iter().map(|pid| describe(*pid)).collect();
    let _ = kill(Pid::from_raw(victim), Signal::SIGCONT);
    if used > WAITERS_CPU_NS {
        findings.fail("sleep-while-stopped", format!(
            "while the grader held worker {victim} stopped (SIGSTOP) with the mutex, the other workers used {} ms of CPU in {} ms ({}): wait in pthread_mutex_lock, which sleeps in the kernel (futex), instead of retrying",
            used / 1_000_000, STOPPED_FOR.as_millis(), seen.join(", ")));
    }
    findings.pass("sleep-while-stopped");
}

/// owner-dies: the holder is SIGKILLed inside its section; the others must still finish.
pub fn kill_holder(session: &mut Session, run: &mut Run, plan: &Plan, findings: &mut Findings) {
    let Some(victim) = catch_holder(session, run) else {
        findings.fail("owner-dies", "the grader never caught a worker holding the mutex, so it could not kill one there: lock the mutex in the region around every add");
        return;
    };
    let _ = kill(Pid::from_raw(victim), Signal::SIGKILL);
    let survivors_owe = (plan.workers - 1) * plan.adds;
    let problem = run.finish(session, Duration::from_secs(3));
    let counted = run.region.counter();
    if let Some(problem) = problem {
        findings.fail("owner-dies", format!(
            "the grader SIGKILLed worker {victim} while it held the mutex; then {problem}. The next pthread_mutex_lock returns EOWNERDEAD: call pthread_mutex_consistent and go on"));
    } else if counted < survivors_owe {
        findings.fail("owner-dies", format!(
            "after the grader SIGKILLed worker {victim} inside its section, the counter ended at {counted}; the other {} workers alone owed {survivors_owe}: on EOWNERDEAD call pthread_mutex_consistent, then do the section as usual",
            plan.workers - 1));
    }
    findings.pass("owner-dies");
}
