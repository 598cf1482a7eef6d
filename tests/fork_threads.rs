//! fork_threads: a fork while a second thread holds stdout's lock leaves the child with
//! one thread and the lock held for ever — the test sees it in /proc with `Threads: 1`
//! (the parent has 2), asleep on a futex, using no CPU, after the half-second deadline
//! (from the events' times) — while echo run by Command and a
//! child that only calls write(2) and _exit(2) work; nothing is left behind.

mod examples;
mod stops;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("fork_threads")
}

#[test]
fn println_hangs_in_the_child_and_exec_and_write_do_not() {
    let events = run_json(demo(), &[]);
    assert_eq!(find(&events, "holding")["threads"], 2);
    let stuck = find(&events, "stuck");
    assert_eq!(stuck["state"], "S", "{stuck}");
    assert!(
        stuck["wchan"]
            .as_str()
            .is_some_and(|place| place.contains("futex")),
        "{stuck}"
    );
    assert_eq!(stuck["child_threads"], 1, "fork copied one thread: {stuck}");
    assert_eq!(stuck["parent_threads"], 2, "{stuck}");
    let println = find(&events, "println");
    assert_eq!(pid_of(&println["pid"]), pid_of(&stuck["child"]));
    // Half a second (the default --deadline) from the fork, which came after `holding`
    // and before the child's `println`, to the parent's look at the child.
    let seconds = |event: &serde_json::Value| event["t"].as_f64().expect("t");
    let since_holding = seconds(stuck) - seconds(find(&events, "holding"));
    let since_println = seconds(stuck) - seconds(println);
    assert!(since_holding >= 0.5, "looked after {since_holding} s");
    assert!(since_println < 0.7, "the child waited {since_println} s");
    assert_eq!(
        find(&events, "reaped")["status"],
        "killed by signal 9 (SIGKILL)"
    );
    let command = find(&events, "command");
    assert_eq!(
        (&command["status"], &command["printed"]),
        (&0.into(), &"hello".into())
    );
    let safe = find(&events, "safe_child");
    assert_eq!(safe["status"], "exited with status 0", "{safe}");
    assert_eq!(safe["wrote"], "hello", "{safe}");
    assert_eq!(
        proc_state(pid_of(&stuck["child"])),
        None,
        "the hung child is reaped"
    );
}

/// The second example of --help: the child held 10 s, looked at from outside.
#[test]
fn the_kernel_shows_one_thread_in_the_child_asleep_on_a_futex() {
    let path = cargo_bin!("fork_threads");
    examples::assert_help_examples(path, &[&[], &["--deadline", "10"]]);
    let mut demo = Running::start(path, &["--deadline", "10"]);
    let child = pid_of(&demo.wait_for("println")["pid"]);
    assert_eq!(proc_status(demo.pid(), "Threads").as_deref(), Some("2"));
    assert_eq!(proc_status(child, "Threads").as_deref(), Some("1"));
    let tasks =
        |pid: i32| std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    assert_eq!(
        (tasks(demo.pid()), tasks(child)),
        (2, 1),
        "/proc/<pid>/task: thread ids"
    );
    let asleep = || proc_wchan(child).is_some_and(|place| place.contains("futex"));
    assert!(
        eventually(Duration::from_secs(5), asleep),
        "{:?}",
        proc_wchan(child)
    );
    assert_eq!(proc_state(child), Some('S'));
    let cpu = || std::fs::read_to_string(format!("/proc/{child}/schedstat")).expect("schedstat");
    let before = cpu();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu(), before, "the child waits and uses no CPU");
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[child]);
}

#[test]
fn sigterm_is_quiet_and_newcomer_mistakes_get_one_line() {
    let path = cargo_bin!("fork_threads");
    stops::assert_quiet_sigterm(path, &["--deadline", "5"], "println", &[0, 300]);
    assert_usage_error(demo(), &["--deadline", "61"]);
    assert_usage_error(demo(), &["--threads"]);
    assert_quiet_into_closed_pipe(path, &[&[]]);
}
