//! lock — W worker processes add to a counter in the grader's shared memory, under the
//! grader's robust, process-shared mutex.
//!
//! Contract (labs/lock/README.md): PROCLAB_SHM names the region, PROCLAB_WORKERS,
//! PROCLAB_ADDS and PROCLAB_HOLD_US say how many workers, how many adds each, and how
//! long the hold inside the section is. Each add: lock; probe += 1; read the counter;
//! sleep the hold; write it plus one; probe -= 1; unlock. Exit 0 once every worker is
//! reaped.
//!
//! The grader runs the program twice. In the first run it samples the probe (at most one
//! worker inside), stops the mutex's owner (SIGSTOP; the owner's id is in the mutex's
//! lock word) and measures the other workers' CPU time while they wait, then checks the
//! counter: exactly W·K. In the second it SIGKILLs the owner inside its section and
//! checks that the others still finish (EOWNERDEAD, pthread_mutex_consistent).

mod faults;
mod region;
mod run;

use std::path::Path;
use std::time::Duration;

use super::Findings;
use crate::seed::Rng;
use crate::session::Session;
use run::Run;

pub struct Plan {
    pub workers: u64,
    pub adds: u64,
    pub hold_us: u64,
}

fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    Plan {
        workers: rng.range(3, 4),
        adds: rng.range(15, 25),
        hold_us: rng.range(1000, 2000),
    }
}

pub fn answers(seed: u64) -> String {
    let plan = plan(seed);
    format!(
        "lock, seed {seed}: PROCLAB_WORKERS={} PROCLAB_ADDS={} PROCLAB_HOLD_US={}\nthe counter must end at {} (first run); after the grader kills the holder (second run), at least {}\n",
        plan.workers,
        plan.adds,
        plan.hold_us,
        plan.workers * plan.adds,
        (plan.workers - 1) * plan.adds
    )
}

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let plan = plan(seed);
    let mut findings = Findings::default();
    let owed = plan.workers * plan.adds;

    // The first run: the probe, the stopped holder, the count.
    let mut run = Run::start(session, program, &plan, "shm")?;
    faults::stop_holder(session, &mut run, &mut findings);
    if let Some(problem) = run.finish(session, Duration::from_secs(4)) {
        findings.fail("no-lost-update", problem);
    }
    let counted = run.region.counter();
    if counted != owed {
        findings.fail("no-lost-update", format!(
            "the counter ended at {counted}, not {} workers × {} adds = {owed}: {} updates were lost. Take the mutex before you read the counter and release it after you write it back",
            plan.workers, plan.adds, owed.saturating_sub(counted)));
    }
    findings.pass("no-lost-update");
    match run.most_inside {
        0 => findings.fail("mutual-exclusion", "the probe never moved: add 1 to it as you enter the section and subtract 1 as you leave"),
        1 => {}
        many => findings.fail("mutual-exclusion", format!(
            "the grader's probe saw {many} workers inside the section at once: lock the mutex (pthread_mutex_lock) before the probe and unlock it after")),
    }
    findings.pass("mutual-exclusion");
    drop(run);

    // The second run: the holder dies inside its section.
    let mut run = Run::start(session, program, &plan, "shm2")?;
    faults::kill_holder(session, &mut run, &plan, &mut findings);
    drop(run);
    Ok(findings)
}
