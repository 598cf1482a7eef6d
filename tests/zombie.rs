//! zombie: an exited child stays in /proc as state Z, parent the demo, until the demo's
//! waitpid — which the test checks itself in /proc while the demo holds the zombies.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("zombie")
}

#[test]
fn zombies_are_visible_in_proc_until_reaped() {
    let mut demo = Running::start(cargo_bin!("zombie"), &["--children", "3", "--hold", "2"]);
    let hold = demo.wait_for("hold");
    let zombies = pids_in(&hold["pids"]);
    assert_eq!(zombies.len(), 3);
    assert_eq!(hold["seconds"], 2.0);
    // The test's own look at the kernel, during the hold.
    for &pid in &zombies {
        assert_eq!(proc_state(pid), Some('Z'), "{pid} is a zombie");
        assert_eq!(
            proc_status(pid, "PPid"),
            Some(demo.pid().to_string()),
            "{pid}'s parent is the demo"
        );
        // Its memory and files are freed already: no command line (so `ps` shows the
        // name in brackets), no resident memory line, no descriptor left.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(cmdline.is_empty(), "{pid}'s cmdline: {cmdline:?}");
        assert_eq!(proc_status(pid, "VmRSS"), None, "{pid} has no memory");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count());
        assert!(matches!(fds, Ok(0)), "{pid}'s descriptors: {fds:?}");
    }
    let (status, events) = demo.finish();
    assert!(status.success());
    for &pid in &zombies {
        assert_eq!(proc_state(pid), None, "{pid} is gone after the demo's wait");
    }
    let summary = summary(&events);
    assert_eq!(pids_in(&summary["zombies"]), zombies);
    assert_eq!(summary["reaped"], 3);
    assert_eq!(
        summary["statuses"],
        serde_json::json!([7, 8, 9]),
        "each child's own status was kept"
    );
}

#[test]
fn sigkill_does_not_remove_a_zombie() {
    let mut demo = Running::start(cargo_bin!("zombie"), &["--hold", "2"]);
    let killed = demo.wait_for("kill_zombie");
    let target = pid_of(&killed["child"]);
    assert_eq!(
        killed["state"], "Z",
        "the demo saw it still Z after SIGKILL"
    );
    demo.wait_for("hold");
    assert_eq!(
        proc_state(target),
        Some('Z'),
        "still a zombie, seen by the test after the SIGKILL"
    );
    let (status, events) = demo.finish();
    assert!(status.success());
    let reap = find(&events, "reap");
    assert_eq!(
        reap["status"], "exited with status 7",
        "SIGKILL did not change the status the kernel kept"
    );
    assert_eq!(reap["gone"], true);
}

#[test]
fn the_parent_is_told_each_zombie_is_z() {
    let events = run_json(demo(), &["--children", "5", "--hold", "0"]);
    let forked: Vec<i32> = events
        .iter()
        .filter(|e| e["event"] == "fork")
        .map(|e| pid_of(&e["child"]))
        .collect();
    let zombies: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "zombie").collect();
    assert_eq!(forked.len(), 5);
    assert_eq!(zombies.len(), 5);
    for zombie in zombies {
        assert_eq!(zombie["state"], "Z");
        assert_eq!(zombie["ppid"], summary(&events)["pid"]);
    }
    let summary = summary(&events);
    assert_eq!(pids_in(&summary["zombies"]), forked);
    assert_eq!(summary["reaped"], 5);
    assert_eq!(summary["state_after_sigkill"], "Z");
}

#[test]
fn many_children_all_reaped() {
    let events = run_json(demo(), &["--children", "1000", "--hold", "0"]);
    let summary = summary(&events);
    assert_eq!(summary["reaped"], 1000);
    for pid in pids_in(&summary["zombies"]) {
        assert_eq!(proc_state(pid), None, "{pid} left behind");
    }
}

#[test]
fn the_kernel_keeps_only_eight_bits_of_an_exit_status() {
    let events = run_json(demo(), &["--children", "300", "--hold", "0"]);
    let statuses = summary(&events)["statuses"]
        .as_array()
        .expect("statuses")
        .clone();
    assert_eq!(statuses[0], 7);
    assert_eq!(statuses[249], 0, "_exit(256) is reported as 0");
    assert_eq!(statuses[299], 50, "_exit(306) is reported as 306 % 256");
}

#[test]
fn text_mode_prints_the_ps_command() {
    run(demo(), &["--hold", "0"])
        .success()
        .stdout(contains("is Z (zombie), parent"))
        .stdout(contains("ps -o pid,ppid,stat,cmd --ppid"));
}

#[test]
fn ctrl_c_during_the_hold_reaps_then_dies_by_sigint() {
    let mut demo = Running::start(cargo_bin!("zombie"), &["--children", "3", "--hold", "30"]);
    let zombies = pids_in(&demo.wait_for("hold")["pids"]);
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &zombies);
    assert_eq!(summary(&events)["reaped"], 3);
    assert_eq!(summary(&events)["interrupted"], "SIGINT");
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--hold"));
    for args in [
        &["--children", "0"][..],
        &["--children", "1001"],
        &["--hold", "soon"],
        &["--hold", "4000"],
        &["--nope"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("zombie"),
        &[
            &["--hold", "0"][..],
            &["--json", "--children", "20", "--hold", "0"],
        ],
    );
}

/// Issue 15: "holding 1 zombie(s)", "1 zombie(s) seen": the count decides the noun.
#[test]
fn one_zombie_is_one_zombie() {
    let events = run_json(demo(), &["--children", "1", "--hold", "0"]);
    let hold = find(&events, "hold")["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(hold.starts_with("holding 1 zombie for"), "{hold}");
    let text = summary(&events)["text"].as_str().expect("text").to_owned();
    assert!(
        text.starts_with("summary: 1 zombie seen in /proc"),
        "{text}"
    );
    let events = run_json(demo(), &["--children", "2", "--hold", "0"]);
    let text = summary(&events)["text"].as_str().expect("text").to_owned();
    assert!(text.starts_with("summary: 2 zombies seen"), "{text}");
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--hold", "3"], &["--children", "5", "--json"]];
    examples::assert_help_examples(cargo_bin!("zombie"), examples);
    let one = run_json(demo(), examples[0]);
    assert_eq!(summary(&one)["statuses"], serde_json::json!([7]));
    // --hold 3: the zombies are there for the ps command the hold line prints.
    let mut held = Running::start(cargo_bin!("zombie"), examples[1]);
    let hold = held.wait_for("hold");
    assert_eq!(hold["seconds"], 3.0);
    let look = hold["text"]
        .as_str()
        .expect("text")
        .rsplit("  ")
        .next()
        .expect("the ps command");
    let words: Vec<&str> = look.split_whitespace().collect();
    let ps = std::process::Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("ps runs");
    let listed = String::from_utf8_lossy(&ps.stdout).into_owned();
    for pid in pids_in(&hold["pids"]) {
        assert!(
            listed.contains(&format!("{pid} ")) && listed.contains("<defunct>"),
            "{listed}"
        );
    }
    assert!(held.finish().0.success());
    let five = run_json(demo(), &examples::without_json(examples[2]));
    assert_eq!(
        summary(&five)["statuses"],
        serde_json::json!([7, 8, 9, 10, 11])
    );
}

/// Issue 16 item 8: the hold's error names the real range.
#[test]
fn a_hold_out_of_range_is_refused_with_the_real_range() {
    for hold in ["1e9", "3601", "1e4"] {
        run(demo(), &["--hold", hold])
            .code(2)
            .stderr(contains("is not between 0 and 3600 seconds"));
    }
}

/// Issue 16 item 8: SIGTERM during the hold reaps the zombies, without a word on stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--children", "3", "--hold", "5"];
    stops::assert_quiet_sigterm(cargo_bin!("zombie"), &args, "hold", &[50, 300]);
}
