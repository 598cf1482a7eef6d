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
use crate::seed::fnv1a;
use crate::session::Session;
use plan::{expected, plan};
use stuck::stuck_message;

mod plan;
mod stuck;

pub use plan::answers;

const EOF_LIMIT: Duration = Duration::from_secs(1);

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
