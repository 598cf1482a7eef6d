//! signal_mask: while SIGUSR1 and SIGRTMIN are blocked, the test sees both pending in
//! /proc (ShdPnd) and blocked (SigBlk); after the unblock SIGUSR1 was handled once and
//! SIGRTMIN once per send, in order, with its values.

mod examples;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("signal_mask")
}

fn mask(pid: i32, field: &str) -> u64 {
    let hex = proc_status(pid, field).unwrap_or_else(|| panic!("{field} of {pid}"));
    u64::from_str_radix(&hex, 16).expect("a hex mask")
}

fn bit(signo: i32) -> u64 {
    1 << (signo - 1)
}

#[test]
fn blocked_signals_wait_pending_in_proc() {
    let mut demo = Running::start(cargo_bin!("signal_mask"), &["--hold", "2"]);
    let pending = demo.wait_for("pending");
    let pid = demo.pid();
    let (usr1, rtmin) = (bit(libc::SIGUSR1), bit(libc::SIGRTMIN()));
    assert_eq!(
        mask(pid, "ShdPnd") & (usr1 | rtmin),
        usr1 | rtmin,
        "both pending for the process"
    );
    assert_eq!(
        mask(pid, "SigBlk") & (usr1 | rtmin),
        usr1 | rtmin,
        "both blocked"
    );
    assert_eq!(
        mask(pid, "SigPnd") & (usr1 | rtmin),
        0,
        "sent to the process, not to a thread"
    );
    assert_eq!(
        mask(pid, "SigCgt") & (usr1 | rtmin),
        usr1 | rtmin,
        "both caught"
    );
    assert_eq!(pending["delivered"], 0, "no handler ran while blocked");
    // SigQ: queued signals of this user / RLIMIT_SIGPENDING (`ulimit -i`), inherited from us.
    let queue = proc_status(pid, "SigQ").expect("SigQ");
    let (queued, limit) = queue.split_once('/').expect("SigQ is n/limit");
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes only into `ours`.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut ours) };
    assert_eq!(got, 0, "getrlimit(RLIMIT_SIGPENDING)");
    assert!(
        queued.parse::<u64>().expect("a count") >= 5,
        "five SIGRTMIN queued: {queue}"
    );
    assert_eq!(
        limit.parse::<u64>().ok(),
        Some(ours.rlim_cur),
        "SigQ's limit: {queue}"
    );
    assert_eq!(
        pending["pending"],
        serde_json::json!(["SIGUSR1", "SIGRTMIN"])
    );
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn five_sigusr1_are_delivered_once_and_five_sigrtmin_five_times_in_order() {
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["usr1_delivered"], 1);
    assert_eq!(summary["rtmin_delivered"], 5);
    assert_eq!(summary["rtmin_values"], serde_json::json!([1, 2, 3, 4, 5]));
    let usr1 = events
        .iter()
        .find(|e| e["event"] == "delivered" && e["signal"] == "SIGUSR1")
        .expect("SIGUSR1 delivered");
    assert_eq!(usr1["value"], 0, "a kill carries no value");
    let events = run_json(demo(), &["--count", "20"]);
    assert_eq!(
        summary_of(&events)["rtmin_values"].as_array().map(Vec::len),
        Some(20)
    );
}

fn summary_of(events: &[serde_json::Value]) -> &serde_json::Value {
    summary(events)
}

#[test]
fn ctrl_c_while_blocked_ends_it_by_sigint() {
    // --help's examples: [] and `--count 20 --json` run in the delivery test above;
    // `--hold 30` here, with the pending set its grep shows.
    let examples: &[&[&str]] = &[&[], &["--hold", "30"], &["--count", "20", "--json"]];
    examples::assert_help_examples(cargo_bin!("signal_mask"), examples);
    let mut demo = Running::start(cargo_bin!("signal_mask"), examples[1]);
    demo.wait_for("pending");
    let both = bit(libc::SIGUSR1) | bit(libc::SIGRTMIN());
    assert_eq!(
        mask(demo.pid(), "ShdPnd") & both,
        both,
        "pending while held"
    );
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
}

#[test]
fn newcomer_mistakes_get_one_line_and_a_closed_stdout_is_quiet() {
    assert_usage_error(demo(), &["--count", "0"]);
    assert_usage_error(demo(), &["--hold", "soon"]);
    assert_quiet_into_closed_pipe(cargo_bin!("signal_mask"), &[&[]]);
}
