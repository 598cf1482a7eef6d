//! signal_handler: the same caught SIGUSR1 fails a blocking read with EINTR without
//! SA_RESTART and lets it go on with SA_RESTART; the test sees, in /proc, the handler
//! installed (SigCgt) and the parent asleep in the pipe read when the signal comes.

mod examples;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("signal_handler")
}

/// Whether signal `signo` is in the hexadecimal mask `field` of /proc/<pid>/status.
fn in_mask(pid: i32, field: &str, signo: i32) -> bool {
    let mask = proc_status(pid, field).unwrap_or_else(|| panic!("{field} of {pid}"));
    u64::from_str_radix(&mask, 16).expect("a hex mask") & (1 << (signo - 1)) != 0
}

#[test]
fn without_sa_restart_read_fails_with_eintr_and_with_it_read_goes_on() {
    let events = run_json(demo(), &["--delay", "0"]);
    let summary = summary(&events);
    assert_eq!(summary["without_restart"], "EINTR");
    assert_eq!(summary["with_restart"], "1 byte");
    let returned: Vec<_> = events.iter().filter(|e| e["event"] == "returned").collect();
    assert_eq!(returned.len(), 2);
    assert!(
        returned.iter().all(|e| e["flag"] == true),
        "the handler ran before read returned, both times: {returned:?}"
    );
    find(&events, "read_again"); // the byte sent after the EINTR still arrives
}

#[test]
fn the_kernel_shows_the_handler_caught_and_the_parent_asleep_in_read() {
    let mut demo = Running::start(cargo_bin!("signal_handler"), &["--delay", "1"]);
    demo.wait_for("sigaction");
    let pid = demo.pid();
    assert!(
        eventually(Duration::from_secs(5), || proc_wchan(pid)
            .is_some_and(|place| place.contains("pipe_read"))),
        "the parent sleeps in the pipe's read: {:?}",
        proc_wchan(pid)
    );
    assert_eq!(proc_state(pid), Some('S'));
    assert!(in_mask(pid, "SigCgt", libc::SIGUSR1), "SIGUSR1 is caught");
    assert!(!in_mask(pid, "SigBlk", libc::SIGUSR1), "and not blocked");
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn ctrl_c_during_the_read_leaves_nothing() {
    // `--delay 10`, --help's example: meanwhile /proc/<parent>/status shows SigCgt.
    let examples: &[&[&str]] = &[&[], &["--delay", "10"]];
    examples::assert_help_examples(cargo_bin!("signal_handler"), examples);
    let plain = run_json(demo(), examples[0]);
    assert_eq!(summary(&plain)["without_restart"], "EINTR");
    assert_eq!(summary(&plain)["with_restart"], "1 byte");
    let mut demo = Running::start(cargo_bin!("signal_handler"), examples[1]);
    demo.wait_for("read");
    assert!(
        in_mask(demo.pid(), "SigCgt", libc::SIGUSR1),
        "SIGUSR1 is caught"
    );
    let children = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &children);
}

#[test]
fn newcomer_mistakes_get_one_line_and_a_closed_stdout_is_quiet() {
    assert_usage_error(demo(), &["--delay", "61"]);
    assert_usage_error(demo(), &["--signal"]);
    assert_quiet_into_closed_pipe(cargo_bin!("signal_handler"), &[&[]]);
}
