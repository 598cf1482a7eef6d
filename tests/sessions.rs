//! sessions: while the session is held, the test reads the leader's /proc/<pid>/stat and
//! finds a session of its own (sid == its pid), the pseudo-terminal as its controlling
//! terminal (tty_nr the slave's device number, the slave among its descriptors, the
//! summary's terminal) with the leader's group
//! in the foreground (tpgid); when the parent closes the master the leader dies by SIGHUP.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use std::time::Duration;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sessions")
}

fn stat_number(pid: i32, field: usize) -> i32 {
    let text = proc_stat_field(pid, field).unwrap_or_else(|| panic!("/proc/{pid}/stat"));
    text.parse().expect("a number")
}

/// The paths the descriptors of `pid` refer to.
fn open_files(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| std::fs::read_link(entry.path()).ok())
                .map(|target| target.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The device number of the terminal at `path` as /proc/<pid>/stat's tty_nr encodes it
/// (the kernel's new_encode_dev: minor bits 0-7, major 8-19, the minor's rest from bit 20).
fn tty_nr_of(path: &str) -> i32 {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path).expect("the slave exists").rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as i32
}

#[test]
fn the_leader_owns_the_pty_until_the_hangup_kills_it_by_sighup() {
    let mut demo = Running::start(cargo_bin!("sessions"), &["--hold", "2"]);
    let slave = demo.wait_for("openpt")["slave"]
        .as_str()
        .expect("the slave's path")
        .to_owned();
    let leader = pid_of(&demo.wait_for("setsid")["pid"]);
    demo.wait_for_where("proc", |event| event["process"] == leader);
    assert_eq!(stat_number(leader, 6), leader, "sid: it leads its session");
    assert_eq!(stat_number(leader, 5), leader, "pgid: and its group");
    assert_ne!(stat_number(leader, 7), 0, "tty_nr: it has a terminal");
    assert_eq!(
        stat_number(leader, 7),
        tty_nr_of(&slave),
        "tty_nr: the device number of {slave}"
    );
    assert_eq!(
        stat_number(leader, 8),
        leader,
        "tpgid: its group is in the foreground"
    );
    assert!(
        open_files(leader).contains(&slave),
        "{leader} holds {slave}: {:?}",
        open_files(leader)
    );
    let held = (stat_number(leader, 6), stat_number(leader, 8));
    assert_ne!(
        stat_number(demo.pid(), 6),
        leader,
        "the parent stays in its session"
    );
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    let printed = events
        .iter()
        .find(|event| event["event"] == "proc" && event["process"] == leader)
        .expect("the leader's proc event");
    assert_eq!(printed["sid"], leader);
    assert_eq!(printed["tpgid"], leader);
    assert_ne!(printed["tty_nr"], 0);
    let reaped = find(&events, "reaped");
    assert_eq!(reaped["signal"], "SIGHUP", "{events:#?}");
    assert_eq!(reaped["core_dumped"], false, "{reaped}");
    assert!(reaped["code"].is_null(), "no exit code: {reaped}");
    let summary = summary(&events);
    assert_eq!(summary["killed_by_sighup"], true);
    // The summary's fields are what /proc said while the session was held.
    assert_eq!(summary["leader"], leader, "{summary}");
    let (sid, tpgid) = held;
    assert_eq!(
        (&summary["sid"], &summary["tpgid"]),
        (&sid.into(), &tpgid.into())
    );
    assert_eq!(
        Some(summary["terminal"].as_str().expect("a terminal name")),
        slave.strip_prefix("/dev/"),
        "{summary}"
    );
    assert_eq!(proc_state(leader), None, "reaped");
}

#[test]
fn ctrl_c_or_sigterm_while_holding_leaves_no_leader() {
    for stop in [libc::SIGINT, libc::SIGTERM] {
        let mut demo = Running::start(cargo_bin!("sessions"), &["--hold", "30"]);
        let leader = pid_of(&demo.wait_for("setsid")["pid"]);
        demo.wait_for("proc");
        match stop {
            libc::SIGINT => demo.interrupt(), // its group: the leader is in another session
            _ => demo.terminate(),
        }
        let (status, _) = demo.finish();
        assert_stopped_cleanly(status, stop, &[leader]);
    }
}

#[test]
fn kill_9_of_the_parent_takes_the_leader_with_it() {
    let mut demo = Running::start(cargo_bin!("sessions"), &["--hold", "30"]);
    let leader = pid_of(&demo.wait_for("setsid")["pid"]);
    demo.kill();
    assert!(
        eventually(Duration::from_secs(5), || !running(leader)),
        "the leader outlived its parent"
    );
}

#[test]
fn newcomer_mistakes_get_one_line_and_stops_are_quiet() {
    assert_usage_error(demo(), &["--hold", "soon"]);
    assert_usage_error(demo(), &["--leader"]);
    assert_quiet_into_closed_pipe(cargo_bin!("sessions"), &[&[], &["--json"]]);
    stops::assert_quiet_sigterm(cargo_bin!("sessions"), &["--hold", "5"], "proc", &[50]);
}

#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--json"], &["--hold", "2"]];
    examples::assert_help_examples(cargo_bin!("sessions"), examples);
    for args in examples {
        let events = run_json(demo(), &examples::without_json(args));
        assert_eq!(summary(&events)["killed_by_sighup"], true, "{args:?}");
    }
}

/// With a controlling terminal of its own, the parent must not mistake the child for the
/// leader before its setsid (the child has the parent's terminal until then).
#[test]
fn from_a_terminal_the_leader_gets_the_pty_not_the_parents_terminal() {
    let Some(events) = run_on_a_terminal(cargo_bin!("sessions")) else {
        return;
    };
    let leader = pid_of(&find(&events, "setsid")["pid"]);
    let parent = pid_of(&events[0]["pid"]);
    let seen = |pid: i32| {
        events
            .iter()
            .find(|event| event["event"] == "proc" && event["process"] == pid)
            .unwrap_or_else(|| panic!("no proc event for {pid}"))
    };
    assert_ne!(seen(parent)["tty_nr"], 0, "the parent had a terminal");
    assert_ne!(
        seen(leader)["tty_nr"],
        seen(parent)["tty_nr"],
        "another terminal"
    );
    assert_eq!(seen(leader)["sid"], leader);
    assert_eq!(summary(&events)["killed_by_sighup"], true, "{events:#?}");
}

/// Under `nohup` (SIGHUP ignored, and kept ignored across exec) the leader still dies by
/// the hangup: the child gives SIGHUP its default action before it takes the terminal.
#[test]
fn under_nohup_the_leader_still_dies_by_the_hangup() {
    let mut nohup = std::process::Command::new("nohup");
    nohup
        .arg(cargo_bin!("sessions"))
        .arg("--json")
        .stdin(std::process::Stdio::null());
    let output = output_within(nohup, TIME_LIMIT).expect("sessions ends under nohup");
    let events = events(&output);
    assert_eq!(summary(&events)["killed_by_sighup"], true, "{events:#?}");
}
