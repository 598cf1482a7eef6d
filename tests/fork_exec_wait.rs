//! fork_exec_wait: the child is a new process of the demo's, exec changes its program but
//! not its pid, and the parent waits in a blocking waitpid — checked against /proc, not
//! only against what the demo prints.

mod examples;
mod stops;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("fork_exec_wait")
}

#[test]
fn child_is_a_new_process_whose_parent_is_the_demo() {
    let events = run_json(demo(), &[]);
    let fork = find(&events, "fork");
    let started = find(&events, "started");
    assert_eq!(fork["role"], "parent");
    assert_eq!(started["role"], "child");
    assert_ne!(started["pid"], fork["pid"], "fork made a new pid");
    assert_eq!(
        started["pid"], fork["child"],
        "fork() returned the child's pid"
    );
    assert_eq!(
        started["ppid"], fork["pid"],
        "the child's parent is the demo"
    );
}

#[test]
fn missing_program_exits_127_and_names_the_error() {
    let events = run_json(demo(), &["--exec", "/nonexistent/proclab-nope"]);
    assert_eq!(find(&events, "exec_failed")["errno"], "ENOENT");
    let summary = summary(&events);
    assert_eq!(summary["code"], 127);
    assert_eq!(summary["comm_after"], "fork_exec_wait", "no exec happened");

    run(demo(), &["--exec", "/nonexistent/proclab-nope"])
        .success()
        .stdout(contains("ENOENT (No such file or directory)"))
        .stdout(contains("exited with status 127"));
}

#[test]
fn the_parent_blocks_in_wait4_for_its_child_with_no_flags() {
    // What the chapter's strace shows: wait4(child, ..., 0, NULL), a blocking wait.
    let mut demo = Running::start(cargo_bin!("fork_exec_wait"), &["--exec", "sleep", "30"]);
    let child = pid_of(&demo.wait_for("exec_seen")["child"]);
    let mut call = String::new();
    let waiting = eventually(Duration::from_secs(5), || {
        call = std::fs::read_to_string(format!("/proc/{}/syscall", demo.pid())).unwrap_or_default();
        call.starts_with(&format!("{} ", libc::SYS_wait4))
    });
    assert!(
        waiting,
        "the demo is not in wait4: /proc/PID/syscall is {call:?}"
    );
    let args: Vec<&str> = call.split_whitespace().collect();
    assert_eq!(
        i64::from_str_radix(args[1].trim_start_matches("0x"), 16),
        Ok(i64::from(child)),
        "it waits for its child: {call}"
    );
    assert_eq!(args[3], "0x0", "options 0: no WNOHANG, it blocks: {call}");
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[child]);
}

#[test]
fn ctrl_c_kills_and_reaps_the_child_then_dies_by_sigint() {
    let mut demo = Running::start(cargo_bin!("fork_exec_wait"), &["--exec", "sleep", "30"]);
    let child = pid_of(&demo.wait_for("exec_seen")["child"]);
    demo.interrupt();
    let (status, events) = demo.finish();
    // Reaped by the demo itself: not even a zombie waits for init.
    assert_interrupted_cleanly(status, &[child]);
    assert_eq!(find(&events, "wait")["signal"], "SIGINT");
}

#[test]
fn sigterm_to_the_demo_alone_ends_the_child_and_the_wait() {
    // The child gets nothing: the demo's wait is interrupted (EINTR), it kills the child
    // and waits again.
    let mut demo = Running::start(cargo_bin!("fork_exec_wait"), &["--exec", "sleep", "30"]);
    let child = pid_of(&demo.wait_for("exec_seen")["child"]);
    demo.terminate();
    let (status, events) = demo.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &[child]);
    assert_eq!(find(&events, "wait")["signal"], "SIGKILL");
}

#[test]
fn signals_ignored_at_start_stay_ignored_in_the_exec_d_program() {
    // nohup starts the demo with SIGHUP ignored; the demo catches SIGHUP for its own
    // cleanup, but must hand the ignored disposition down, as exec would.
    let output = std::process::Command::new("nohup")
        .arg(cargo_bin!("fork_exec_wait"))
        .args(["--exec", "grep", "SigIgn", "/proc/self/status"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("nohup runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mask = stdout
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).expect("a hex mask"))
        .unwrap_or_else(|| panic!("no SigIgn line: {stdout}"));
    assert_eq!(mask & 1, 1, "SIGHUP (bit 0) is still ignored: {mask:#x}");
    assert_eq!(
        mask & (1 << 12),
        0,
        "SIGPIPE (bit 12) is back to default: {mask:#x}"
    );
}

#[test]
fn command_name_changes_at_exec_while_pid_stays() {
    let mut demo = Running::start(cargo_bin!("fork_exec_wait"), &["--exec", "sleep", "1"]);
    let child = pid_of(&demo.wait_for("fork")["child"]);
    // The test's own look at the kernel, while the child runs.
    assert!(
        eventually(Duration::from_secs(5), || proc_comm(child).as_deref()
            == Some("sleep")),
        "/proc/{child}/comm never became sleep"
    );
    assert_eq!(proc_status(child, "PPid"), Some(demo.pid().to_string()));
    let (status, events) = demo.finish();
    assert!(status.success());

    let started = find(&events, "started");
    assert_eq!(pid_of(&started["pid"]), child);
    assert_eq!(
        started["comm"], "fork_exec_wait",
        "before exec the child has the demo's name"
    );
    assert_eq!(find(&events, "exec_seen")["comm"], "sleep");
    let summary = summary(&events);
    assert_eq!(summary["comm_before"], "fork_exec_wait");
    assert_eq!(summary["comm_after"], "sleep");
    assert_eq!(summary["status"], "exited with status 0");
}

#[test]
fn json_output_is_json_lines_ending_in_a_summary() {
    // run_json checks each line and the summary at the end.
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["mode"], "exec");
    assert_eq!(summary["child"], find(&events, "fork")["child"]);
    assert_eq!(summary["code"], 0);
    for pid in [summary["pid"].clone(), summary["child"].clone()] {
        let times: Vec<f64> = events
            .iter()
            .filter(|event| event["pid"] == pid)
            .map(|event| event["t"].as_f64().expect("t is a number"))
            .collect();
        assert!(
            times.windows(2).all(|pair| pair[0] <= pair[1]),
            "time runs forward: {times:?}"
        );
    }
    // One clock for all the demo's processes: the child speaks after the fork and before
    // the parent's wait returns, in the parent's time.
    let at = |event: &serde_json::Value| event["t"].as_f64().expect("t is a number");
    let child_first = events
        .iter()
        .find(|event| event["pid"] == summary["child"])
        .expect("the child speaks");
    assert!(at(find(&events, "fork")) <= at(child_first), "{events:#?}");
    assert!(at(child_first) <= at(find(&events, "wait")), "{events:#?}");
}

#[test]
fn the_wait_frees_the_pid() {
    let events = run_json(demo(), &[]);
    let child = pid_of(&find(&events, "fork")["child"]);
    assert_eq!(find(&events, "gone")["child"], child);
    assert_eq!(
        proc_state(child),
        None,
        "/proc/{child} is gone after the demo"
    );
}

#[test]
fn no_process_is_left_running_after_the_demo_is_killed() {
    let mut demo = Running::start(cargo_bin!("fork_exec_wait"), &["--exec", "sleep", "30"]);
    let child = pid_of(&demo.wait_for("exec_seen")["child"]);
    assert!(running(child), "the child runs sleep");
    demo.kill(); // SIGKILL to the demo alone: its child must die with it
    assert!(
        eventually(Duration::from_secs(5), || !running(child)),
        "child {child} outlived the demo: {:?}",
        proc_state(child)
    );
}

#[test]
fn help_explains_and_exits_0() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("Usage"))
        .stdout(contains("Examples"));
}

#[test]
fn bad_values_exit_2_with_one_line() {
    // (--exit-code and --signal, and their conflict, are child_status's now.)
    for args in [&["--frobnicate"][..], &["--exec"], &["--exit-code", "1"]] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("fork_exec_wait"),
        &[&[][..], &["--json"], &["--exec", "yes"]],
    );
}

/// Issue 15: the exec line said "state Z" in some runs and "state R" in others, next to
/// "now runs a new program"; its text now has one shape, and the state is in --json only.
#[test]
fn the_exec_line_has_the_same_shape_in_every_run() {
    for _ in 0..10 {
        let events = run_json(demo(), &[]);
        let seen = find(&events, "exec_seen");
        let child = pid_of(&seen["child"]);
        let expected = format!("kernel says {child} runs a new program under the same pid: \"sh\"");
        assert_eq!(seen["text"], expected.as_str(), "{seen}");
        let state = seen["state"].as_str().expect("state");
        assert!(["R", "S", "D", "Z"].contains(&state), "{seen}");
    }
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[
        &[],
        &["--exec", "sleep", "3"],
        &["--json", "--exec", "ls", "-l", "/proc/self"],
    ];
    examples::assert_help_examples(cargo_bin!("fork_exec_wait"), examples);
    let plain = run_json(demo(), examples[0]);
    assert_eq!(summary(&plain)["comm_after"], "sh", "the default execs sh");
    // --exec sleep 3: time to look, and /proc shows it sleeping under the child's pid
    // (read by the test itself: the demo's own look may come before sleep blocks, R).
    let mut slow = Running::start(cargo_bin!("fork_exec_wait"), examples[1]);
    let seen = slow.wait_for("exec_seen");
    assert_eq!(seen["comm"], "sleep");
    let child = pid_of(&seen["child"]);
    assert!(
        eventually(Duration::from_secs(2), || proc_state(child) == Some('S')),
        "sleep is asleep (S) under the child's pid {child}"
    );
    let (_, slow_events) = slow.finish();
    assert_eq!(summary(&slow_events)["comm_after"], "sleep");
    // --json: stdout stays JSON Lines (events() parses every line); ls writes on stderr.
    let output = run(demo(), examples[2]).success().get_output().clone();
    let events = events(&output.stdout);
    assert_eq!(summary(&events)["comm_after"], "ls");
    // ls runs under the child's pid: /proc/self, for ls, is the child.
    let child = pid_of(&summary(&events)["child"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains(&format!("/proc/self -> {child}")),
        "{stderr}"
    );
}

/// Issue 16 item 8: SIGTERM to the demo while its child runs ends both without a word on
/// stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--exec", "sleep", "5"];
    stops::assert_quiet_sigterm(cargo_bin!("fork_exec_wait"), &args, "exec_seen", &[0, 100]);
}
