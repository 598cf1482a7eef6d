//! pipeline — the program connects the stages the grader names: `a | b | c`.
//!
//! Contract (labs/pipeline/README.md): each argument is one stage's command line; the
//! first stage reads the program's stdin, the last writes its stdout, each stage's
//! stdout is the next one's stdin; every stage holds only descriptors 0, 1, 2; the
//! program waits for every stage and exits with the last one's status.
//!
//! The grader sees: the bytes on its own pipes (a digest of what comes out against the
//! seeded input shifted by every stage), the moment end-of-file arrives, and — when it
//! does not — who still holds a write end, from /proc/<pid>/fd and fdinfo.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Findings;
use crate::observe;
use crate::seed::{Rng, fnv1a};
use crate::session::Session;

const EOF_LIMIT: Duration = Duration::from_secs(1);

struct Plan {
    adds: Vec<u8>,
    input: Vec<u8>,
}

fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let stages = rng.range(3, 4) as usize;
    let adds = (0..stages).map(|_| rng.range(1, 255) as u8).collect();
    let size = rng.range(64, 256) as usize * 1024;
    let input = (0..size).map(|_| rng.next_u64() as u8).collect();
    Plan { adds, input }
}

fn expected(plan: &Plan) -> Vec<u8> {
    let shift = plan
        .adds
        .iter()
        .fold(0u8, |sum, add| sum.wrapping_add(*add));
    plan.input
        .iter()
        .map(|byte| byte.wrapping_add(shift))
        .collect()
}

pub fn answers(seed: u64) -> String {
    let plan = plan(seed);
    let out = expected(&plan);
    format!(
        "pipeline, seed {seed}: {} stages adding {:?}; {} bytes in (fnv1a {:016x}), the same number out (fnv1a {:016x})\n",
        plan.adds.len(),
        plan.adds,
        plan.input.len(),
        fnv1a(&plan.input),
        fnv1a(&out)
    )
}

#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    eof: Option<Instant>,
}

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let plan = plan(seed);
    let mut findings = Findings::default();
    let helper = session.helper.display().to_string();
    let stages: Vec<String> = plan
        .adds
        .iter()
        .enumerate()
        .map(|(index, add)| format!("{helper} add {add} --stage {index}"))
        .collect();
    let mut command = Command::new(program);
    command
        .args(&stages)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = session.spawn(&mut command, 0)?;
    let pid = child.id() as i32;
    let mut input = child.stdin.take().expect("stdin was piped");
    let mut output = child.stdout.take().expect("stdout was piped");
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = Arc::clone(&received);
    // Reads until end-of-file; if it never comes, the session's kill ends it.
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65536];
        while let Ok(count @ 1..) = output.read(&mut buffer) {
            sink.lock()
                .expect("no panic while holding it")
                .bytes
                .extend_from_slice(&buffer[..count]);
        }
        sink.lock().expect("no panic while holding it").eof = Some(Instant::now());
    });

    // A little input, then look at the stages while they wait for more.
    let _ = input.write_all(&plan.input[..4096]);
    let stage_pids = |session: &mut Session| -> Vec<(usize, i32)> {
        let _ = session;
        let mut found: Vec<(usize, i32)> = observe::descendants(pid)
            .iter()
            .filter_map(|stat| {
                let line = observe::cmdline(stat.pid);
                let stage = line.split(" --stage ").nth(1)?.trim().parse().ok()?;
                line.contains(" add ").then_some((stage, stat.pid))
            })
            .collect();
        found.sort();
        found
    };
    let count = plan.adds.len();
    session.wait_for(Duration::from_secs(1), |session| {
        stage_pids(session).len() == count
    });
    session.sleep(Duration::from_millis(50));
    let running = stage_pids(session);
    if running.len() < count {
        findings.fail(
            "fds",
            format!(
                "only {} of {count} stages were running: start one process per argument",
                running.len()
            ),
        );
    }
    for (stage, stage_pid) in &running {
        let extra: Vec<String> = observe::fds(*stage_pid)
            .into_iter()
            .filter(|fd| fd.fd > 2)
            .map(|fd| format!("fd {} -> {}", fd.fd, fd.target))
            .collect();
        if !extra.is_empty() {
            findings.fail("fds", format!("stage {stage} (pid {stage_pid}) holds {}: after dup2, close both ends of every pipe in each child (or create them with O_CLOEXEC)", extra.join(", ")));
        }
    }
    findings.pass("fds");

    // The rest of the input, then end-of-file: it must reach the end of the pipeline.
    let rest = plan.input[4096..].to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&rest);
        drop(input); // end-of-file for the first stage
        Instant::now()
    });
    let done = |_: &mut Session| {
        writer.is_finished()
            && received
                .lock()
                .expect("no panic while holding it")
                .eof
                .is_some()
    };
    let arrived = session.wait_for(Duration::from_secs(2), done);
    if !arrived {
        // Still waiting: find the first stage alive and who holds its pipe's write end.
        findings.fail("eof", stuck_message(pid, &stage_pids(session)));
    } else {
        let closed = writer.join().expect("the writer does not panic");
        let eof = received
            .lock()
            .expect("no panic while holding it")
            .eof
            .expect("arrived");
        if eof.duration_since(closed) > EOF_LIMIT {
            findings.fail(
                "eof",
                format!(
                    "end-of-file reached the end {} ms after the input closed",
                    eof.duration_since(closed).as_millis()
                ),
            );
        }
    }
    findings.pass("eof");
    let out = received
        .lock()
        .expect("no panic while holding it")
        .bytes
        .clone();
    let want = expected(&plan);
    if out != want {
        let first = out
            .iter()
            .zip(&want)
            .position(|(got, wanted)| got != wanted)
            .unwrap_or(out.len().min(want.len()));
        findings.fail("bytes", format!(
            "{} bytes came out (fnv1a {:016x}), expected {} (fnv1a {:016x}), first difference at byte {first}: connect stage i's stdout to stage i+1's stdin, in order, and let only the last stage write your stdout",
            out.len(), fnv1a(&out), want.len(), fnv1a(&want)));
    }
    findings.pass("bytes");

    let exited = session.wait_for(Duration::from_secs(1), |session| !session.running());
    let adopted: Vec<i32> = observe::children(std::process::id() as i32)
        .iter()
        .map(|stat| stat.pid)
        .collect();
    if !exited {
        findings.fail("reaped", "your program had not exited 1 s after the pipeline should have ended: wait for every stage, then exit");
    } else if !adopted.is_empty() {
        findings.fail("reaped", format!("your program exited without waiting for stages {adopted:?} (the grader adopted them): waitpid each stage"));
    } else if let Some(nix::sys::wait::WaitStatus::Exited(_, code @ 1..)) = session.status {
        findings.fail(
            "reaped",
            format!("your program exited {code}; the last stage exited 0"),
        );
    }
    findings.pass("reaped");
    Ok(findings)
}

/// "stage 2 (pid 4243) still waits for end-of-file on pipe:[123]; pid 4240 holds its
/// write end as fd 5": who keeps the pipe writable, from /proc/<pid>/fd and fdinfo.
fn stuck_message(program: i32, stages: &[(usize, i32)]) -> String {
    let Some((stage, stage_pid)) = stages.first() else {
        return "no end-of-file reached your stdout, yet no stage is running".to_string();
    };
    let Some(stdin) = observe::fds(*stage_pid).into_iter().find(|fd| fd.fd == 0) else {
        return format!("stage {stage} (pid {stage_pid}) never saw end-of-file");
    };
    let mut holders = Vec::new();
    for holder in
        std::iter::once(program).chain(observe::descendants(program).iter().map(|stat| stat.pid))
    {
        for fd in observe::fds(holder) {
            if fd.target == stdin.target && fd.writes() {
                let who = if holder == program {
                    format!("pid {holder} (your program)")
                } else {
                    format!("pid {holder}")
                };
                holders.push(format!(
                    "{who} as fd {} (fdinfo flags {:o})",
                    fd.fd, fd.flags
                ));
            }
        }
    }
    format!(
        "stage {stage} (pid {stage_pid}) still waits for end-of-file on its stdin, {}, 2 s after the input closed: its write end is still held by {}. Close every pipe end a process does not use, in the parent and in each child",
        stdin.target,
        if holders.is_empty() {
            "nobody visible".to_string()
        } else {
            holders.join(", ")
        }
    )
}
