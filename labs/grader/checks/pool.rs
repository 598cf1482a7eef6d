//! pool — a worker pool that writes one result per task to the grader's sink, while the
//! grader kills its workers.
//!
//! Contract (labs/pool/README.md): PROCLAB_WORKERS workers; each line on stdin is
//! `<id> <ms>`; a task is done by a worker sleeping `ms` and then appending
//! `<id> <pid>\n` to the file PROCLAB_SINK names, in one write. A killed worker is
//! replaced and its task done by another; after end-of-file the pool stays until
//! SIGTERM, then ends its workers, reaps them and exits within the grace.
//!
//! The grader sees: the program's live children in /proc (the workers; one asleep in
//! hrtimer_nanosleep is working on a task, so that is the one it kills), its own sink
//! file (every id at least once), and how the program ends after SIGTERM.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::Findings;
use crate::observe;
use crate::seed::Rng;
use crate::session::Session;

const WORKERS: usize = 3;
const KILLS: usize = 3;
const RESPAWN_LIMIT: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(1);

fn plan(seed: u64) -> Vec<(u32, u64)> {
    let mut rng = Rng::new(seed);
    let count = rng.range(18, 24) as u32;
    (0..count)
        .map(|index| (500 + index * 3 + rng.range(0, 2) as u32, rng.range(60, 120)))
        .collect()
}

pub fn answers(seed: u64) -> String {
    let tasks = plan(seed);
    let ids: Vec<String> = tasks.iter().map(|(id, _)| id.to_string()).collect();
    format!(
        "pool, seed {seed}: PROCLAB_WORKERS={WORKERS}; {} tasks (id ms): {tasks:?}\nthe sink must hold every id at least once: {}\nthe grader kills {KILLS} working workers, then sends SIGTERM once every id is in\n",
        tasks.len(),
        ids.join(" ")
    )
}

/// The ids in the sink (each at least once), and the lines that are no task's result.
fn read_sink(sink: &Path, tasks: &[(u32, u64)]) -> (BTreeSet<u32>, Vec<String>) {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let (mut done, mut strange) = (BTreeSet::new(), Vec::new());
    for line in text.lines() {
        let id = line.split(' ').next().and_then(|id| id.parse::<u32>().ok());
        match id.filter(|id| tasks.iter().any(|(task, _)| task == id)) {
            Some(id) if line.split(' ').count() == 2 => {
                done.insert(id);
            }
            _ => strange.push(line.to_string()),
        }
    }
    (done, strange)
}

fn workers(program: i32) -> Vec<i32> {
    observe::children(program)
        .iter()
        .filter(|stat| stat.state != 'Z')
        .map(|stat| stat.pid)
        .collect()
}

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let tasks = plan(seed);
    let mut findings = Findings::default();
    let sink = session.scratch.join("sink");
    std::fs::write(&sink, "")?;
    let mut command = Command::new(program);
    command
        .env("PROCLAB_WORKERS", WORKERS.to_string())
        .env("PROCLAB_SINK", &sink)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = session.spawn(&mut command, 0)?;
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let lines: String = tasks
        .iter()
        .map(|(id, ms)| format!("{id} {ms}\n"))
        .collect();
    let _ = stdin.write_all(lines.as_bytes());
    drop(stdin);

    // Kills, while tasks are still queued: each time a worker asleep in its task.
    if !session.wait_for(Duration::from_secs(1), |_| workers(pid).len() == WORKERS) {
        findings.fail("respawn", format!("1 s after it started your program had {} live workers, not {WORKERS}: fork PROCLAB_WORKERS workers", workers(pid).len()));
    }
    let mut killed = Vec::new();
    for _ in 0..KILLS {
        session.sleep(Duration::from_millis(120));
        let mut victim = None;
        session.wait_for(Duration::from_millis(300), |_| {
            victim = workers(pid)
                .into_iter()
                .find(|worker| observe::wchan(*worker).contains("nanosleep"));
            victim.is_some()
        });
        let Some(victim) = victim.or_else(|| workers(pid).first().copied()) else {
            break;
        };
        let _ = kill(Pid::from_raw(victim), Signal::SIGKILL);
        killed.push(victim);
        let at = Instant::now();
        let back = session.wait_for(RESPAWN_LIMIT, |_| {
            let live = workers(pid);
            !live.contains(&victim) && live.len() == WORKERS
        });
        if !back {
            findings.fail("respawn", format!(
                "{} ms after the grader SIGKILLed worker {victim}, your program had {} live workers, not {WORKERS}: when waitpid reports a worker dead, fork a new one",
                at.elapsed().as_millis(), workers(pid).iter().filter(|worker| **worker != victim).count()));
        }
    }
    findings.pass("respawn");

    // Every task's result, at least once.
    // Until every id is in, or the pool has been idle (no result, no worker asleep in a
    // task) for 300 ms: a lost task never comes.
    let (mut count, mut changed) = (0, Instant::now());
    session.wait_for(Duration::from_secs(4), |_| {
        let now = read_sink(&sink, &tasks).0.len();
        let working = workers(pid)
            .iter()
            .any(|worker| observe::wchan(*worker).contains("nanosleep"));
        if now != count || working {
            (count, changed) = (now, Instant::now());
        }
        now == tasks.len() || changed.elapsed() > Duration::from_millis(300)
    });
    let (done, strange) = read_sink(&sink, &tasks);
    let missing: Vec<u32> = tasks
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !done.contains(id))
        .collect();
    if !missing.is_empty() {
        findings.fail("exactly-once", format!(
            "{} of {} tasks never reached the sink (ids {missing:?}); the grader had SIGKILLed workers {killed:?} while they worked: remember which task each worker holds, and when one dies give its task to another",
            missing.len(), tasks.len()));
    }
    if !strange.is_empty() {
        findings.fail("exactly-once", format!("the sink holds lines that are no task's result, e.g. `{}`: write `<id> <pid>` and a newline, in one write", strange[0]));
    }
    findings.pass("exactly-once");

    // SIGTERM: the pool ends its workers and itself within the grace, leaving nothing.
    let before = workers(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let sent = Instant::now();
    let ended = session.wait_for(GRACE, |session| !session.running());
    let left: Vec<i32> = observe::children(std::process::id() as i32)
        .iter()
        .map(|stat| stat.pid)
        .collect();
    if !ended {
        findings.fail("sigterm", format!("your program was still running {} ms after SIGTERM (workers {:?}): catch SIGTERM, end the workers, reap them and exit", GRACE.as_millis(), workers(pid)));
    } else if !left.is_empty() {
        findings.fail("sigterm", format!("after SIGTERM your program ended in {} ms but left workers {left:?} (the grader adopted them; it had {before:?}): end every worker and waitpid it before you exit", sent.elapsed().as_millis()));
    } else {
        match session.status {
            Some(WaitStatus::Exited(_, 0)) | Some(WaitStatus::Signaled(_, Signal::SIGTERM, _)) => {}
            Some(status) => findings.fail("sigterm", format!("after SIGTERM your program ended by {status:?}: exit 0 once the workers are reaped")),
            None => {}
        }
    }
    findings.pass("sigterm");
    Ok(findings)
}
