//! child_status: the parent decodes every way a child can end — an exit status, a death
//! by signal, an exec that failed — from the raw status word waitpid returns.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("child_status")
}

#[test]
fn exit_codes_are_decoded() {
    for code in [0, 1, 7, 255] {
        let events = run_json(demo(), &["--exit-code", &code.to_string()]);
        let summary = summary(&events);
        assert_eq!(summary["mode"], "exit-code");
        assert_eq!(summary["code"], code, "{summary}");
        assert_eq!(summary["status"], format!("exited with status {code}"));
        assert!(summary.get("signal").is_none());
    }
}

#[test]
fn deaths_by_signal_are_decoded() {
    for (name, number, full) in [
        ("KILL", 9, "SIGKILL"),
        ("TERM", 15, "SIGTERM"),
        ("segv", 11, "SIGSEGV"),
    ] {
        let events = run_json(demo(), &["--signal", name]);
        let summary = summary(&events);
        assert_eq!(summary["mode"], "signal");
        assert_eq!(summary["signal"], full, "{summary}");
        assert_eq!(
            summary["status"],
            format!("killed by signal {number} ({full})")
        );
        assert_eq!(
            summary["core_dumped"], false,
            "the child disables core files"
        );
        assert!(summary.get("code").is_none());
    }
}

#[test]
fn the_raw_status_holds_the_exit_code_in_bits_8_to_15_and_a_signal_in_bits_0_to_6() {
    // The status word as the kernel wrote it, before any macro: (code << 8) for an exit,
    // the signal's number for a death by signal (no core dump: bit 7 clear).
    for (args, raw) in [
        (&["--exit-code", "7"][..], 7 << 8),
        (&["--exit-code", "255"], 255 << 8),
        (&["--signal", "KILL"], 9),
        (&["--signal", "SEGV"], 11),
        (&["--exec", "/nonexistent/proclab-nope"], 127 << 8),
    ] {
        let events = run_json(demo(), args);
        assert_eq!(find(&events, "raw_status")["raw"], raw, "{args:?}");
    }
    run(demo(), &["--exit-code", "7"])
        .success()
        .stdout(contains("status word 0x0700: WIFEXITED, WEXITSTATUS = 7"));
    run(demo(), &["--signal", "TERM"])
        .success()
        .stdout(contains("WIFSIGNALED, WTERMSIG = 15, WCOREDUMP = false"));
}

#[test]
fn without_options_the_child_exits_7() {
    let events = run_json(demo(), &[]);
    assert_eq!(find(&events, "exit")["code"], 7);
    assert_eq!(summary(&events)["status"], "exited with status 7");
}

#[test]
fn missing_program_exits_127_and_names_the_error() {
    let events = run_json(demo(), &["--exec", "/nonexistent/proclab-nope"]);
    assert_eq!(find(&events, "exec_failed")["errno"], "ENOENT");
    let summary = summary(&events);
    assert_eq!(summary["mode"], "exec");
    assert_eq!(summary["code"], 127);

    run(demo(), &["--exec", "/nonexistent/proclab-nope"])
        .success()
        .stdout(contains("ENOENT (No such file or directory)"))
        .stdout(contains("exited with status 127"));
}

#[test]
fn a_program_that_cannot_be_run_exits_126() {
    let events = run_json(demo(), &["--exec", "/etc/passwd"]); // exists, not executable
    assert_eq!(find(&events, "exec_failed")["errno"], "EACCES");
    assert_eq!(summary(&events)["code"], 126);
}

#[test]
fn an_exec_d_program_killed_by_a_signal_is_reported_like_any_child() {
    let events = run_json(demo(), &["--exec", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(summary(&events)["status"], "killed by signal 15 (SIGTERM)");
}

#[test]
fn the_wait_frees_the_pid() {
    let events = run_json(demo(), &["--exit-code", "3"]);
    let child = pid_of(&find(&events, "fork")["child"]);
    assert_eq!(find(&events, "gone")["child"], child);
    assert_eq!(
        proc_state(child),
        None,
        "/proc/{child} is gone after the demo"
    );
}

#[test]
fn ctrl_c_kills_and_reaps_a_running_child_then_dies_by_sigint() {
    let mut demo = Running::start(cargo_bin!("child_status"), &["--exec", "sleep", "30"]);
    let child = pid_of(&demo.wait_for("fork")["child"]);
    assert!(
        eventually(std::time::Duration::from_secs(5), || proc_comm(child)
            .as_deref()
            == Some("sleep")),
        "the child never ran sleep"
    );
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &[child]);
    assert_eq!(find(&events, "wait")["signal"], "SIGINT");
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
    for args in [
        &["--exit-code", "256"][..],
        &["--exit-code", "-1"],
        &["--signal", "NOPE"],
        &["--signal", "STOP"],
        &["--frobnicate"],
        &["--exit-code", "1", "--signal", "KILL"],
        &["--signal", "KILL", "--exec", "true"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("child_status"),
        &[&[][..], &["--json", "--signal", "SEGV"], &["--exec", "yes"]],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--signal", "SEGV"], &["--exec", "nope"]];
    examples::assert_help_examples(cargo_bin!("child_status"), examples);
    let exit = run_json(demo(), examples[0]);
    assert_eq!(find(&exit, "raw_status")["raw"], 0x0700, "7 in bits 8-15");
    let segv = run_json(demo(), examples[1]);
    assert_eq!(
        find(&segv, "raw_status")["raw"],
        11,
        "SIGSEGV in bits 0-6, no core"
    );
    assert_eq!(summary(&segv)["signal"], "SIGSEGV");
    let nope = run_json(demo(), examples[2]);
    assert_eq!(find(&nope, "raw_status")["raw"], 0x7f00, "127: not found");
}

/// Issue 16 item 8: SIGTERM to the demo while its child runs is quiet.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--exec", "sleep", "5"];
    stops::assert_quiet_sigterm(cargo_bin!("child_status"), &args, "fork", &[100, 300]);
}
