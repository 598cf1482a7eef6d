//! jobs: at each step (held with --hold) the test reads /proc itself: the terminal's
//! foreground group (tpgid) follows tcsetpgrp, the jobs wait in read(2) (/proc/<pid>/syscall),
//! the background job that read the terminal and the foreground job after Ctrl-Z are in
//! state T, and after `fg` the job runs again, back in its read (S); waitpid(WUNTRACED |
//! WCONTINUED) reported SIGTTIN, SIGTSTP and the continue.

mod examples;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use serde_json::Value;
use std::time::Duration;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("jobs")
}

fn stat_number(pid: i32, field: usize) -> i32 {
    let text = proc_stat_field(pid, field).unwrap_or_else(|| panic!("/proc/{pid}/stat"));
    text.parse().expect("a number")
}

/// Whether `pid` is blocked in read(2): the first field of /proc/<pid>/syscall is the
/// number of the system call it is in.
fn in_read(pid: i32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let number = syscall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok());
    number == Some(libc::SYS_read)
}

fn status_of(event: &Value) -> &str {
    event["status"].as_str().expect("a status in words")
}

#[test]
fn tpgid_follows_tcsetpgrp_and_stopped_jobs_are_in_state_t() {
    let mut demo = Running::start(cargo_bin!("jobs"), &["--hold", "1"]);
    let shell = pid_of(&demo.wait_for("terminal")["pid"]);
    let foreground = pid_of(&demo.wait_for("tcsetpgrp")["pgrp"]);
    assert_eq!(stat_number(shell, 8), foreground, "tpgid: the job's group");
    assert_eq!(stat_number(foreground, 5), foreground, "a group of its own");
    assert_eq!(stat_number(foreground, 6), shell, "in the shell's session");
    let waits_for_a_line = || in_read(foreground) && proc_state(foreground) == Some('S');
    assert!(
        eventually(Duration::from_millis(500), waits_for_a_line),
        "the foreground job waits in read(terminal)"
    );

    let ttin = demo.wait_for("waitpid");
    let background = pid_of(&ttin["job"]);
    assert!(status_of(&ttin).contains("SIGTTIN"), "{ttin}");
    assert_eq!(proc_state(background), Some('T'), "stopped by its read");
    assert!(in_read(background), "stopped inside read(terminal)");
    assert_eq!(stat_number(background, 5), background);
    assert_ne!(stat_number(shell, 8), background, "it is in the background");

    let tstp = demo.wait_for_where("waitpid", |e| status_of(e).contains("SIGTSTP"));
    assert_eq!(
        pid_of(&tstp["job"]),
        foreground,
        "Ctrl-Z reached the foreground job"
    );
    assert_eq!(proc_state(foreground), Some('T'));
    assert_eq!(
        stat_number(shell, 8),
        foreground,
        "T+: stopped in the foreground"
    );
    demo.wait_for_where("tcsetpgrp", |e| e["pgrp"] == shell);
    assert_eq!(stat_number(shell, 8), shell, "tpgid: back to the shell");
    assert_eq!(proc_state(foreground), Some('T'), "still stopped");

    let continued = demo.wait_for_where("waitpid", |e| status_of(e) == "continued");
    assert_eq!(pid_of(&continued["job"]), foreground);
    assert_eq!(
        stat_number(shell, 8),
        foreground,
        "fg gave it the terminal again"
    );
    assert!(
        eventually(Duration::from_millis(500), waits_for_a_line),
        "it runs again, back in its read"
    );
    assert_eq!(
        proc_state(background),
        Some('T'),
        "the background job stays stopped"
    );

    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    let summary = summary(&events);
    assert_eq!(summary["background_stop"], "stopped by signal 21 (SIGTTIN)");
    assert_eq!(summary["foreground_stop"], "stopped by signal 20 (SIGTSTP)");
    assert_eq!(summary["after_fg"], "continued");
    for pid in [shell, foreground, background] {
        assert_eq!(proc_state(pid), None, "{pid} is reaped");
    }
}

/// The jobs are the shell's children, in groups and a session not the program's:
/// Ctrl-C reaches neither them nor the shell. The program kills the shell, and the jobs —
/// orphans, adopted by the program as their subreaper — are reaped too.
#[test]
fn ctrl_c_with_both_jobs_stopped_leaves_nothing() {
    let mut demo = Running::start(cargo_bin!("jobs"), &["--hold", "1"]);
    let shell = pid_of(&demo.wait_for("terminal")["pid"]);
    let background = pid_of(&demo.wait_for("waitpid")["job"]);
    let tstp = demo.wait_for_where("waitpid", |e| status_of(e).contains("SIGTSTP"));
    let foreground = pid_of(&tstp["job"]);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[shell, foreground, background]);
}

#[test]
fn kill_9_of_the_shell_is_an_error_and_its_orphaned_jobs_are_reaped() {
    let mut demo = Running::start(cargo_bin!("jobs"), &["--hold", "1"]);
    let shell = pid_of(&demo.wait_for("terminal")["pid"]);
    let background = pid_of(&demo.wait_for("waitpid")["job"]);
    let foreground = stat_number(shell, 8);
    send_signal(shell, libc::SIGKILL);
    let (status, _) = demo.finish();
    assert_eq!(status.code(), Some(1), "{status:?}");
    for pid in [shell, foreground, background] {
        assert_eq!(proc_state(pid), None, "{pid} is left");
    }
}

#[test]
fn kill_9_of_the_program_takes_the_shell_and_jobs_with_it() {
    let mut demo = Running::start(cargo_bin!("jobs"), &["--hold", "1"]);
    let shell = pid_of(&demo.wait_for("terminal")["pid"]);
    let background = pid_of(&demo.wait_for("waitpid")["job"]);
    let foreground = stat_number(shell, 8);
    demo.kill();
    let gone = eventually(Duration::from_secs(5), || {
        [shell, foreground, background]
            .iter()
            .all(|&pid| !running(pid))
    });
    assert!(gone, "a process outlived the program");
}

#[test]
fn newcomer_mistakes_get_one_line_and_a_closed_stdout_is_quiet() {
    assert_usage_error(demo(), &["--hold", "3601"]);
    assert_usage_error(demo(), &["--hold", "soon"]);
    assert_quiet_into_closed_pipe(cargo_bin!("jobs"), &[&[], &["--json"]]);
}

#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--json"], &["--hold", "0.5"]];
    examples::assert_help_examples(cargo_bin!("jobs"), examples);
    for args in examples {
        let events = run_json(demo(), &examples::without_json(args));
        assert_eq!(summary(&events)["after_fg"], "continued", "{args:?}");
    }
}

/// Started with the stop signals ignored (a program may be), the jobs still stop: a shell
/// gives its jobs the default actions back (they read EIO and ended here before it did).
#[test]
fn started_with_the_stop_signals_ignored_the_jobs_still_stop() {
    let mut shell = std::process::Command::new("sh");
    let jobs = cargo_bin!("jobs").display();
    let command = format!("trap '' TSTP TTIN TTOU; exec {jobs} --json");
    shell
        .args(["-c", &command])
        .stdin(std::process::Stdio::null());
    let output = output_within(shell, Duration::from_secs(10)).expect("it ends");
    let events = events(&output);
    assert_eq!(
        summary(&events)["background_stop"],
        "stopped by signal 21 (SIGTTIN)"
    );
    assert_eq!(
        summary(&events)["foreground_stop"],
        "stopped by signal 20 (SIGTSTP)"
    );
}

/// With a controlling terminal of its own: the same.
#[test]
fn from_a_terminal_the_jobs_stop_and_continue_the_same() {
    let Some(events) = run_on_a_terminal(cargo_bin!("jobs")) else {
        return;
    };
    assert_eq!(summary(&events)["after_fg"], "continued", "{events:#?}");
}

/// The `--json` fields the chapter lists: each tcsetpgrp's tpgid is the group it gave the
/// terminal to, each waitpid's state is what the job's status says (T when stopped, and
/// running or asleep again after SIGCONT), and the Ctrl-Z comes between the background
/// stop and the foreground's.
#[test]
fn the_json_fields_agree_with_each_other() {
    let events = run_json(demo(), &[]);
    for event in events.iter().filter(|e| e["event"] == "tcsetpgrp") {
        assert_eq!(event["tpgid"], event["pgrp"], "{event}");
    }
    let waits: Vec<&Value> = events.iter().filter(|e| e["event"] == "waitpid").collect();
    for wait in &waits {
        let stopped = status_of(wait).starts_with("stopped");
        assert_eq!(
            wait["state"] == "T",
            stopped,
            "T exactly when stopped: {wait}"
        );
    }
    let position = |name: &str| events.iter().position(|e| e["event"] == name);
    let ctrl_z = position("ctrl_z").expect("a ctrl_z event");
    assert!(
        status_of(&events[ctrl_z - 1]).contains("SIGTTIN"),
        "{events:#?}"
    );
    assert!(
        status_of(&events[ctrl_z + 1]).contains("SIGTSTP"),
        "{events:#?}"
    );
}
