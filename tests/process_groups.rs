//! process_groups: while the group is held, the test reads each child's pgid and sid in
//! /proc and finds what the program printed — one group, named after its first member,
//! not the parent's; one killpg(SIGINT) kills every member and the parent exits 0.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use serde_json::Value;
use std::time::Duration;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("process_groups")
}

fn stat_number(pid: i32, field: usize) -> i32 {
    let text = proc_stat_field(pid, field).unwrap_or_else(|| panic!("/proc/{pid}/stat"));
    text.parse().expect("a number")
}

/// The program's `proc` event about `pid`.
fn printed(events: &[Value], pid: i32) -> &Value {
    events
        .iter()
        .find(|event| event["event"] == "proc" && event["process"] == pid)
        .unwrap_or_else(|| panic!("no proc event for {pid}"))
}

#[test]
fn the_kernel_shows_one_new_group_and_killpg_kills_all_of_it_by_sigint() {
    let mut demo = Running::start(cargo_bin!("process_groups"), &["--hold", "2"]);
    let group = demo.wait_for("group");
    let (pgid, members) = (pid_of(&group["pgid"]), pids_in(&group["members"]));
    assert_eq!(members.len(), 3);
    assert_eq!(
        pgid, members[0],
        "the group is named after its first member"
    );
    let parent = demo.pid();
    let parent_pgid = stat_number(parent, 5);
    assert_ne!(
        parent_pgid, pgid,
        "the parent is not in the children's group"
    );
    assert_eq!(
        parent_pgid, parent,
        "the parent's group is the one its starter made for it (Running::start, as a shell)"
    );
    let sid = stat_number(parent, 6);
    for &member in &members {
        assert_eq!(stat_number(member, 5), pgid, "pgid of {member} in /proc");
        assert_eq!(stat_number(member, 6), sid, "setpgid keeps the session");
    }
    let (status, events) = demo.finish();
    assert!(status.success(), "the parent survives: {status:?}");
    for &member in &members {
        let seen = printed(&events, member);
        assert_eq!(seen["pgid"], pgid, "printed pgid of {member}");
        assert_eq!(seen["sid"], sid, "printed sid of {member}");
        let reaped = events
            .iter()
            .find(|event| event["event"] == "reaped" && event["child"] == member)
            .expect("every member is reaped");
        assert_eq!(reaped["signal"], "SIGINT", "{member} died by SIGINT");
        assert_eq!(proc_state(member), None, "{member} is gone");
    }
    assert_eq!(printed(&events, parent)["pgid"], parent_pgid);
    let summary = summary(&events);
    assert_eq!(summary["killed_by_sigint"], 3);
    assert_eq!(summary["parent_pgid"], parent_pgid);
    assert_eq!(summary["pgid"], pgid, "the group /proc showed");
    assert_eq!(summary["members"], members.len(), "{summary}");
}

/// The chapter's `kill -INT -<pgid>` during a hold: the members become zombies at once,
/// the kernel keeps for each the wait status of a death by SIGINT without a core (field
/// 52 of /proc/<pid>/stat, `exit_code`, while it is a zombie), and when the hold ends the
/// program reaps them and reports the same; setpgid changed neither terminal nor tpgid.
#[test]
fn kill_int_to_the_held_group_leaves_zombies_reaped_as_killed_by_sigint() {
    let mut demo = Running::start(cargo_bin!("process_groups"), &["--hold", "2"]);
    let group = demo.wait_for("group");
    let (pgid, members) = (pid_of(&group["pgid"]), pids_in(&group["members"]));
    let me = std::process::id() as i32;
    let (our_tty, our_tpgid) = (stat_number(me, 7), stat_number(me, 8));
    if our_tty == 0 {
        assert_eq!(our_tpgid, -1, "no terminal, no foreground group");
    }
    for &member in &members {
        assert_eq!(stat_number(member, 7), our_tty, "tty_nr of {member}");
        assert_eq!(stat_number(member, 8), our_tpgid, "tpgid of {member}");
    }
    send_signal(-pgid, libc::SIGINT);
    let zombies = || {
        members
            .iter()
            .all(|&member| proc_state(member) == Some('Z'))
    };
    assert!(
        eventually(Duration::from_millis(500), zombies),
        "{members:?}"
    );
    for &member in &members {
        assert_eq!(
            stat_number(member, 52),
            libc::SIGINT,
            "exit_code of {member}"
        );
    }
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    for &member in &members {
        let reaped = events
            .iter()
            .find(|event| event["event"] == "reaped" && event["child"] == member)
            .expect("every member is reaped");
        assert_eq!(reaped["signal"], "SIGINT", "{reaped}");
        assert_eq!(reaped["core_dumped"], false, "{reaped}");
        assert!(reaped["code"].is_null(), "no exit code: {reaped}");
        assert_eq!(proc_state(member), None, "{member} is gone");
    }
    assert_eq!(summary(&events)["killed_by_sigint"], 3);
}

/// The members are in a group of their own: Ctrl-C to the program's group does not reach
/// them, nor SIGTERM to the program; it must end them itself.
#[test]
fn ctrl_c_or_sigterm_while_holding_leaves_no_member() {
    for stop in [libc::SIGINT, libc::SIGTERM] {
        let mut demo = Running::start(cargo_bin!("process_groups"), &["--hold", "30"]);
        let members = pids_in(&demo.wait_for("group")["members"]);
        match stop {
            libc::SIGINT => demo.interrupt(),
            _ => demo.terminate(),
        }
        let (status, _) = demo.finish();
        assert_stopped_cleanly(status, stop, &members);
    }
}

#[test]
fn kill_9_of_the_parent_takes_the_members_with_it() {
    let mut demo = Running::start(cargo_bin!("process_groups"), &["--hold", "30"]);
    let members = pids_in(&demo.wait_for("group")["members"]);
    demo.kill();
    let gone = eventually(Duration::from_secs(5), || {
        members.iter().all(|&member| !running(member))
    });
    assert!(gone, "a member outlived its parent: {members:?}");
}

#[test]
fn newcomer_mistakes_get_one_line_and_stops_are_quiet() {
    assert_usage_error(demo(), &["--children", "0"]);
    assert_usage_error(demo(), &["--children", "21"]);
    assert_usage_error(demo(), &["--hold", "soon"]);
    assert_quiet_into_closed_pipe(cargo_bin!("process_groups"), &[&[], &["--json"]]);
    stops::assert_quiet_sigterm(
        cargo_bin!("process_groups"),
        &["--hold", "5"],
        "group",
        &[50],
    );
}

#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--children", "5", "--json"], &["--hold", "2"]];
    examples::assert_help_examples(cargo_bin!("process_groups"), examples);
    for (args, members) in examples.iter().zip([3, 5, 3]) {
        let events = run_json(demo(), &examples::without_json(args));
        assert_eq!(summary(&events)["killed_by_sigint"], members, "{args:?}");
    }
}

/// A program started with SIGINT ignored (`cmd &` in a script): its children start with
/// SIGINT ignored too, and re-ignore it in their first steps; the parent must wait until
/// /proc shows them with the default action, or an early SIGINT is lost (it was: the
/// first member of a group of 3 survived, and the parent waited for ever).
#[test]
fn started_with_sigint_ignored_every_member_still_dies_by_it() {
    for _ in 0..5 {
        let mut shell = std::process::Command::new("sh");
        let command = format!(
            "trap '' INT; exec {} --json --children 5",
            cargo_bin!("process_groups").display()
        );
        shell
            .args(["-c", &command])
            .stdin(std::process::Stdio::null());
        let output = output_within(shell, Duration::from_secs(10)).expect("no member survives");
        assert_eq!(summary(&events(&output))["killed_by_sigint"], 5);
    }
}

/// With a controlling terminal (the program then leads its own session): the same, and
/// every member shows the terminal and its foreground group, as the chapter says.
#[test]
fn from_a_terminal_the_group_dies_the_same() {
    let Some(events) = run_on_a_terminal(cargo_bin!("process_groups")) else {
        return;
    };
    let parent = pid_of(&events[0]["pid"]);
    let parents = printed(&events, parent);
    assert_ne!(parents["tty_nr"], 0, "it had a terminal");
    assert_ne!(parents["tpgid"], -1, "with a foreground group");
    for member in pids_in(&find(&events, "group")["members"]) {
        let members = printed(&events, member);
        assert_eq!(members["tty_nr"], parents["tty_nr"], "{members}");
        assert_eq!(members["tpgid"], parents["tpgid"], "{members}");
    }
    assert_eq!(summary(&events)["killed_by_sigint"], 3);
}
