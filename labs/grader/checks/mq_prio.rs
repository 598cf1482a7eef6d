//! mq_prio — the program feeds the grader's POSIX queue: every job with its priority.
//!
//! Contract (labs/mq_prio/README.md): each line on stdin is `<id> <priority>`; send the
//! id (decimal ASCII) to the queue named by PROCLAB_MQ with that priority, in input
//! order, blocking while the queue is full; at end-of-file exit 0.
//!
//! The grader owns the queue (10 messages): it lets it fill and looks at the producer
//! (state and CPU time in /proc: asleep, not spinning, not gone), then drains it and
//! checks every message: the priority it came with, the order the kernel gave it (highest
//! priority first, FIFO within one), and that each job arrived exactly once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mqueue::{MQ_OFlag, MqAttr, mq_getattr, mq_open, mq_receive};
use nix::sys::stat::Mode;

use super::Findings;
use crate::observe;
use crate::seed::Rng;
use crate::session::Session;

const CAPACITY: i64 = 10;

fn plan(seed: u64) -> Vec<(u32, u32)> {
    let mut rng = Rng::new(seed);
    let count = rng.range(30, 45) as u32;
    (0..count)
        .map(|index| {
            (
                1000 + index * 7 + rng.range(0, 6) as u32,
                rng.range(0, 9) as u32,
            )
        })
        .collect()
}

pub fn answers(seed: u64) -> String {
    let jobs = plan(seed);
    let mut first: Vec<&(u32, u32)> = jobs.iter().take(CAPACITY as usize).collect();
    first.sort_by_key(|(_, prio)| std::cmp::Reverse(*prio)); // stable: FIFO within a priority
    let order: Vec<String> = first
        .iter()
        .map(|(id, prio)| format!("{id}@{prio}"))
        .collect();
    format!(
        "mq_prio, seed {seed}: {} jobs (id priority): {:?}\nonce the queue is full, the grader receives first: {}\n",
        jobs.len(),
        jobs,
        order.join(" ")
    )
}

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let jobs = plan(seed);
    let mut findings = Findings::default();
    let name = session.ipc_name("mq");
    let attr = MqAttr::new(0, CAPACITY, 64, 0);
    let flags = MQ_OFlag::O_CREAT
        | MQ_OFlag::O_EXCL
        | MQ_OFlag::O_RDONLY
        | MQ_OFlag::O_NONBLOCK
        | MQ_OFlag::O_CLOEXEC;
    let queue = mq_open(
        name.as_str(),
        flags,
        Mode::from_bits_truncate(0o600),
        Some(&attr),
    )?;
    let mut command = Command::new(program);
    command.env("PROCLAB_MQ", &name).stdin(Stdio::piped());
    let mut child = session.spawn(&mut command, 0)?;
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let lines: String = jobs
        .iter()
        .map(|(id, prio)| format!("{id} {prio}\n"))
        .collect();
    let _ = stdin.write_all(lines.as_bytes());
    drop(stdin);

    // Let the queue fill: the producer must then sleep in mq_send, not spin, not leave.
    let queued = |_: &mut Session| mq_getattr(&queue).map_or(0, |attr| attr.curmsgs());
    session.wait_for(Duration::from_secs(1), |session| {
        queued(session) == CAPACITY
    });
    let before = observe::cpu_ns(pid);
    session.sleep(Duration::from_millis(300));
    let after = observe::cpu_ns(pid);
    let state = observe::stat(pid).map(|stat| stat.state);
    let in_queue = queued(session);
    match (before, after, state) {
        _ if in_queue < CAPACITY => findings.fail("blocks", format!("only {in_queue} of the first {CAPACITY} jobs reached the queue within 1 s: send each line as it comes")),
        (_, _, None | Some('Z')) => findings.fail("blocks", format!("your program ended while the queue was full, with {} jobs still to send: open the queue without O_NONBLOCK so mq_send waits for room", jobs.len() as i64 - CAPACITY)),
        (Some(before), Some(after), _) if after - before > 60_000_000 => findings.fail("blocks", format!("your program used {} ms of CPU in 300 ms while the queue was full: let mq_send block instead of retrying", (after - before) / 1_000_000)),
        (_, _, Some(state)) if state != 'S' => findings.fail("blocks", format!("with the queue full your program was in state {state}, not S (asleep in {})", observe::wchan(pid))),
        _ => {}
    }
    findings.pass("blocks");

    // Drain slowly: every message is checked against what had certainly been sent.
    let index: BTreeMap<u32, usize> = jobs
        .iter()
        .enumerate()
        .map(|(at, (id, _))| (*id, at))
        .collect();
    let mut received: Vec<usize> = Vec::new();
    let mut seen = vec![0u32; jobs.len()];
    let mut buffer = [0u8; 64];
    session.wait_for(Duration::from_secs(3), |session| {
        let finished = !session.running(); // checked first: what it sent is in the queue
        let mut prio = 0u32;
        while let Ok(count) = mq_receive(&queue, &mut buffer, &mut prio) {
            let text = String::from_utf8_lossy(&buffer[..count]).trim().to_string();
            let Some(&at) = text.parse::<u32>().ok().and_then(|id| index.get(&id)) else {
                findings.fail("exactly-once", format!("a message `{text}` is no job's id: send the id as decimal text"));
                continue;
            };
            seen[at] += 1;
            let (id, wanted) = jobs[at];
            if prio != wanted {
                findings.fail("priority-order", format!("job {id} arrived with priority {prio}; its line said {wanted}: pass the priority as mq_send's last argument"));
            }
            // Every job before this one in the input was sent before it; if one with a
            // priority as high is still unreceived, the kernel would have given it first.
            if let Some(ahead) = (0..at).find(|&earlier| seen[earlier] == 0 && jobs[earlier].1 >= wanted) {
                findings.fail("priority-order", format!("job {id} (priority {wanted}) came before job {} (priority {}), sent earlier: send the jobs in input order, each with its priority", jobs[ahead].0, jobs[ahead].1));
            }
            received.push(at);
        }
        finished
    });
    let missing: Vec<u32> = jobs
        .iter()
        .zip(&seen)
        .filter(|(_, count)| **count == 0)
        .map(|((id, _), _)| *id)
        .collect();
    let twice: Vec<u32> = jobs
        .iter()
        .zip(&seen)
        .filter(|(_, count)| **count > 1)
        .map(|((id, _), _)| *id)
        .collect();
    if !missing.is_empty() {
        findings.fail("exactly-once", format!("{} of {} jobs never arrived (first: {:?}): a full queue must make you wait, not drop", missing.len(), jobs.len(), &missing[..missing.len().min(5)]));
    }
    if !twice.is_empty() {
        findings.fail(
            "exactly-once",
            format!("jobs {twice:?} arrived more than once: send each line once"),
        );
    }
    if received.is_empty() {
        findings.fail(
            "priority-order",
            "no message arrived, so no order could be seen",
        );
    }
    findings.pass("exactly-once");
    findings.pass("priority-order");
    Ok(findings)
}
