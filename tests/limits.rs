//! Resource limits (issue 16 items 6 and 8): under `prlimit --nofile=32` a demo still runs,
//! its self-pipe kept below the limit; when `fork` fails with EAGAIN because of
//! RLIMIT_NPROC, or a demo runs out of descriptors (EMFILE), the one-line error names that
//! limit, and nothing is left behind.
//!
//! The limits are set in the demo's process only (`setrlimit` in a `pre_exec` of its
//! `Command`, after fork, before exec): this test process keeps its own; the demo runs
//! through `util::Running::start_command`.

mod util;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use serde_json::Value;
use util::*;

/// The descriptor limit of issue 16 item 6: below the self-pipe's usual place (100).
const NOFILE: u64 = 32;

/// A `Command` for the binary at `program` whose process gets `resource` lowered to `limit` (soft and
/// hard) just before it execs.
fn limited(program: &Path, resource: libc::__rlimit_resource_t, limit: u64) -> Command {
    let mut command = Command::new(program);
    let lowered = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2),
    // which is async-signal-safe, on a value copied into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(resource, &lowered) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// The descriptors `pid` has open, from `/proc/<pid>/fd`, with what each one is
/// (`pipe:[1234]`, `/dev/null` …).
fn open_descriptors(pid: i32) -> Vec<(i32, String)> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/<pid>/fd");
    let mut fds: Vec<(i32, String)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// The pipes of which `pid` holds both ends, each as its two descriptors.
fn pipes_held_at_both_ends(pid: i32) -> Vec<Vec<i32>> {
    let fds = open_descriptors(pid);
    let mut pipes: Vec<(&str, Vec<i32>)> = Vec::new();
    for (fd, target) in &fds {
        if !target.starts_with("pipe:") {
            continue;
        }
        match pipes.iter_mut().find(|(name, _)| name == target) {
            Some((_, ends)) => ends.push(*fd),
            None => pipes.push((target, vec![*fd])),
        }
    }
    pipes
        .into_iter()
        .map(|(_, ends)| ends)
        .filter(|ends| ends.len() >= 2)
        .collect()
}

#[test]
fn under_32_descriptors_zombie_runs_and_its_self_pipe_stays_below_the_limit() {
    let command = limited(cargo_bin!("zombie"), libc::RLIMIT_NOFILE, NOFILE);
    let mut demo = Running::start_command(command, &["--children", "2", "--hold", "30"]);
    let hold = demo.wait_for("hold");
    let pid = demo.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"));
    let fields: Vec<&str> = open_files.expect("a line").split_whitespace().collect();
    assert_eq!(
        fields[3..5],
        ["32", "32"],
        "the kernel holds the limit: {limits}"
    );
    // The self-pipe (both ends in the demo) is there, below the limit, where pipe2 put it.
    let pipes = pipes_held_at_both_ends(pid);
    assert_eq!(pipes.len(), 1, "the self-pipe: {:?}", open_descriptors(pid));
    assert!(pipes[0].iter().all(|&fd| fd < NOFILE as i32), "{pipes:?}");
    let zombies = pids_in(&hold["pids"]);
    assert_eq!(zombies.len(), 2);
    for &zombie in &zombies {
        assert_eq!(proc_state(zombie), Some('Z'), "{zombie}");
    }
    // Ctrl-C during the 30 s hold: the wake-up reaches the demo, which reaps and dies by it.
    send_signal(-pid, libc::SIGINT);
    let started = Instant::now();
    let (status, events) = demo.finish();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hold was cut short"
    );
    assert_interrupted_cleanly(status, &zombies);
    assert_eq!(summary(&events)["interrupted"], "SIGINT");
    assert_eq!(summary(&events)["reaped"], 2);
}

#[test]
fn under_32_descriptors_sigchld_reaps_every_child() {
    let command = limited(cargo_bin!("sigchld"), libc::RLIMIT_NOFILE, NOFILE);
    let demo = Running::start_command(command, &["--children", "20"]);
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}: {events:#?}");
    let summary = summary(&events);
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["reaped"], 20, "{summary}");
    assert_eq!(summary["zombies_left"], 0, "{summary}");
    let children = pids_in(&events[0]["pids"]);
    assert_eq!(events[0]["event"], "forked");
    assert_eq!(children.len(), 20, "{events:#?}");
    for child in children {
        assert_eq!(proc_state(child), None, "{child} is left behind");
    }
}

/// Issue 16 item 6: below RLIMIT_NOFILE a demo that needs a descriptor per child said only
/// "pidfd_open(N): EMFILE: Too many open files"; the line now names the limit and its
/// value, and the children forked before are reaped.
#[test]
fn out_of_descriptors_the_error_names_rlimit_nofile_and_leaves_nothing() {
    let mut command = limited(cargo_bin!("sigchld_pidfd"), libc::RLIMIT_NOFILE, NOFILE);
    let output = command
        .args(["--json", "--children", "100"])
        .stdin(Stdio::null())
        .output()
        .expect("the demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{:?}: {stderr}",
        output.status
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("sigchld_pidfd: error: pidfd_open("),
        "{stderr}"
    );
    let hint = format!(
        ": EMFILE: Too many open files — RLIMIT_NOFILE allows {NOFILE} open descriptors per \
         process (ulimit -n)\n"
    );
    assert!(stderr.ends_with(&hint), "{stderr}");
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().expect("the forked event");
    let forked: Value = serde_json::from_str(first).expect("a JSON line");
    assert_eq!(forked["event"], "forked", "{first}");
    let children = pids_in(&forked["pids"]);
    assert_eq!(children.len(), 100, "{first}");
    for child in children {
        assert_eq!(proc_state(child), None, "{child} is left behind");
    }
}

/// Processes whose real uid is `uid`, from `/proc/<pid>/status`.
fn processes_of(uid: u32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|&pid: &i32| {
            let uids = proc_status(pid, "Uid").unwrap_or_default();
            uids.split_whitespace().next() == Some(&uid.to_string())
        })
        .collect()
}

#[test]
fn a_fork_refused_by_rlimit_nproc_names_the_limit_and_leaves_nothing() {
    // RLIMIT_NPROC counts the processes of the real uid, and is not enforced for root
    // (nor with CAP_SYS_RESOURCE or CAP_SYS_ADMIN). As root, the demo runs as a uid of its
    // own that nothing else uses, so that the count is exactly the demo's: limit 3 lets
    // the demo and two zombies exist, and the third fork fails with EAGAIN.
    // SAFETY: getuid(2) only returns a number.
    let root = unsafe { libc::getuid() } == 0;
    let (limit, uid) = if root {
        (3, Some(61_000 + std::process::id() % 4_000))
    } else {
        (1, None) // this user runs this test already: the first fork fails
    };
    let mut command = limited(cargo_bin!("zombie"), libc::RLIMIT_NPROC, limit);
    if let Some(uid) = uid {
        // std sets the groups, gid and uid after fork, before the pre_exec above: the
        // limit is then lowered by the unprivileged demo itself (always allowed).
        command.uid(uid).gid(uid);
        if !processes_of(uid).is_empty() {
            eprintln!("skipped: uid {uid} already runs processes, its count is not the demo's");
            return;
        }
    }
    let output = command
        .args(["--json", "--children", "3", "--hold", "30"])
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            eprintln!(
                "skipped: cannot start the demo as uid {uid:?} with RLIMIT_NPROC {limit}: {error}"
            );
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.is_empty() && output.status.success() {
        eprintln!("skipped: fork was not refused (CAP_SYS_RESOURCE or CAP_SYS_ADMIN?)");
        return;
    }
    assert_eq!(
        output.status.code(),
        Some(1),
        "{:?}: {stderr}",
        output.status
    );
    assert_eq!(output.status.signal(), None);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("zombie: error: fork: EAGAIN"),
        "{stderr}"
    );
    let hint = format!("RLIMIT_NPROC is {limit} processes for your user (ulimit -u), who runs ");
    let (_, count) = stderr
        .split_once(&hint)
        .unwrap_or_else(|| panic!("{stderr}"));
    let count: usize = count
        .trim_end()
        .strip_suffix(" now")
        .expect(" now")
        .parse()
        .expect("M");
    assert!(count >= limit as usize, "{stderr}");
    if root {
        assert_eq!(
            count, limit as usize,
            "the demo and its two zombies: {stderr}"
        );
    }
    // The children forked before the refusal were killed and reaped before the demo exited.
    let text = String::from_utf8_lossy(&output.stdout);
    let forked: Vec<i32> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|event| event["event"] == "fork")
        .map(|event| pid_of(&event["child"]))
        .collect();
    assert_eq!(forked.len(), limit as usize - 1, "{text}");
    for child in forked {
        assert_eq!(proc_state(child), None, "{child} is left behind");
    }
    if let Some(uid) = uid {
        assert_eq!(processes_of(uid), Vec::<i32>::new(), "left as uid {uid}");
    }
}
