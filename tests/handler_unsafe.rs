//! handler_unsafe: a SIGUSR1 handler that allocates, run while the main flow is inside
//! malloc, hangs the child for good — the test sees it in /proc asleep on a futex, with
//! SIGUSR1 blocked (its handler is running) and no CPU time used — while a handler that
//! only counts survives the same storm, its work done at most once per signal sent;
//! nothing is left behind.

mod examples;
mod stops;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use serde_json::{Value, json};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("handler_unsafe")
}

/// Whether signal `signo` is in the hexadecimal mask `field` of /proc/<pid>/status.
fn in_mask(pid: i32, field: &str, signo: i32) -> bool {
    let mask = proc_status(pid, field).unwrap_or_else(|| panic!("{field} of {pid}"));
    u64::from_str_radix(&mask, 16).expect("a hex mask") & (1 << (signo - 1)) != 0
}

/// Nanoseconds `pid` has run on a CPU: the first field of /proc/<pid>/schedstat.
fn cpu_ns(pid: i32) -> u64 {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    let first = schedstat.split_whitespace().next().expect("a first field");
    first.parse().expect("nanoseconds")
}

/// An event's time: seconds since the program started.
fn seconds(event: &Value) -> f64 {
    event["t"].as_f64().expect("every event has t")
}

fn children(events: &[Value]) -> Vec<i32> {
    let storms = events.iter().filter(|event| event["event"] == "storm");
    storms.map(|event| pid_of(&event["child"])).collect()
}

#[test]
fn the_allocating_handler_hangs_the_child_and_the_counting_one_does_not() {
    let events = run_json(demo(), &[]);
    assert_eq!(summary(&events)["hung"], json!([true, false]));
    let hung = find(&events, "hung");
    assert_eq!(hung["state"], "S (sleeping)", "{hung}");
    assert!(
        hung["wchan"]
            .as_str()
            .is_some_and(|place| place.contains("futex")),
        "{hung}"
    );
    assert_eq!(
        hung["sigusr1_blocked"], true,
        "it hangs inside its handler: {hung}"
    );
    let reaped: Vec<_> = events.iter().filter(|e| e["event"] == "reaped").collect();
    assert_eq!(reaped[0]["status"], "killed by signal 9 (SIGKILL)");
    assert_eq!(reaped[1]["status"], "exited with status 0");
    let survived = find(&events, "survived");
    let children = children(&events);
    assert_eq!(
        pid_of(&survived["pid"]),
        children[1],
        "the second child survived"
    );
    assert!(survived["handled"].as_u64() > Some(100), "{survived}");
    let sent: Vec<u64> = summary(&events)["sent"]
        .as_array()
        .expect("sent: one count per child")
        .iter()
        .map(|count| count.as_u64().expect("a count"))
        .collect();
    for (reaped, sent) in reaped.iter().zip(&sent) {
        assert_eq!(reaped["sent"], *sent, "{reaped}");
    }
    // The parent looks every 50 signals, and the first look only records the CPU time.
    assert!(
        sent[0] >= 100 && sent[0] % 50 == 0,
        "hung noticed after {sent:?}"
    );
    // The main flow does the handler's work at most once per signal the kernel took.
    let handled = survived["handled"].as_u64().expect("a count");
    assert!(
        handled <= sent[1],
        "handled {handled} of {} signals",
        sent[1]
    );
    // The counting child's loop lasts its second of signals (STORM), from its storm event.
    let storms: Vec<_> = events.iter().filter(|e| e["event"] == "storm").collect();
    let lasted = seconds(survived) - seconds(storms[1]);
    assert!((0.8..1.5).contains(&lasted), "the storm lasted {lasted} s");
    for child in children {
        assert_eq!(proc_state(child), None, "{child} is left behind");
    }
}

/// The second example of --help: the hung child held 10 s, looked at from outside.
#[test]
fn the_kernel_shows_the_hung_child_asleep_on_a_futex_using_no_cpu() {
    let path = cargo_bin!("handler_unsafe");
    examples::assert_help_examples(path, &[&[], &["--hold", "10"]]);
    let mut demo = Running::start(path, &["--hold", "10"]);
    let child = pid_of(&demo.wait_for("storm")["child"]);
    demo.wait_for("hung");
    assert_eq!(proc_state(child), Some('S'));
    let wchan = proc_wchan(child).unwrap_or_default();
    assert!(wchan.contains("futex"), "asleep on a futex: {wchan}");
    assert!(in_mask(child, "SigCgt", libc::SIGUSR1), "SIGUSR1 is caught");
    assert!(
        in_mask(child, "SigBlk", libc::SIGUSR1),
        "and blocked: its handler runs"
    );
    assert_eq!(proc_status(child, "Threads").as_deref(), Some("1"));
    let before = cpu_ns(child);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu_ns(child), before, "a hung child uses no CPU");
    assert_eq!(proc_state(child), Some('S'));
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[child]);
}

#[test]
fn ctrl_c_during_the_storm_leaves_nothing() {
    let mut demo = Running::start(cargo_bin!("handler_unsafe"), &[]);
    let first = pid_of(&demo.wait_for("storm")["child"]);
    let second = pid_of(&demo.wait_for_where("storm", |e| pid_of(&e["child"]) != first)["child"]);
    std::thread::sleep(Duration::from_millis(200)); // the storm on the surviving child
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[first, second]);
}

#[test]
fn sigterm_is_quiet_and_newcomer_mistakes_get_one_line() {
    let path = cargo_bin!("handler_unsafe");
    stops::assert_quiet_sigterm(path, &["--hold", "5"], "storm", &[0, 300]);
    assert_usage_error(demo(), &["--hold", "61"]);
    assert_usage_error(demo(), &["--storm"]);
    assert_quiet_into_closed_pipe(path, &[&[]]);
}
