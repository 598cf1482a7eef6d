//! sigsuspend: a SIGUSR1 that comes between the flag's check and pause() is lost — the
//! test sees the program asleep in pause with nothing pending — and pause() wakes only
//! by the alarm; with the signal blocked across the check, sigsuspend() returns at once.

mod examples;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigsuspend")
}

#[test]
fn pause_misses_the_signal_and_sigsuspend_does_not() {
    let events = run_json(demo(), &[]);
    let woke: Vec<_> = events.iter().filter(|e| e["event"] == "woke").collect();
    assert_eq!(woke.len(), 2);
    assert_eq!(woke[0]["by"], "SIGALRM", "pause() slept until the alarm");
    assert!(woke[0]["seconds"].as_f64() >= Some(0.9), "{:?}", woke[0]);
    assert_eq!(
        woke[1]["by"], "SIGUSR1",
        "sigsuspend() got the pending signal"
    );
    assert!(woke[1]["seconds"].as_f64() < Some(0.5), "{:?}", woke[1]);
}

#[test]
fn during_the_lost_wake_up_the_kernel_shows_pause_and_nothing_pending() {
    let mut demo = Running::start(cargo_bin!("sigsuspend"), &["--alarm", "3"]);
    demo.wait_for("pause");
    let pid = demo.pid();
    assert!(
        eventually(Duration::from_secs(2), || proc_wchan(pid)
            .is_some_and(|place| place.contains("pause"))),
        "asleep in pause: {:?}",
        proc_wchan(pid)
    );
    assert_eq!(proc_state(pid), Some('S'));
    let pending = proc_status(pid, "ShdPnd").expect("ShdPnd");
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    assert_eq!(
        u64::from_str_radix(&pending, 16).expect("hex") & usr1,
        0,
        "SIGUSR1 already consumed"
    );
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn ctrl_c_during_the_pause_ends_it_by_sigint() {
    // `--alarm 10`, --help's example: during the pause, /proc/<pid>/wchan says pause.
    let examples: &[&[&str]] = &[&[], &["--alarm", "10"]]; // []: the first test here
    examples::assert_help_examples(cargo_bin!("sigsuspend"), examples);
    let mut demo = Running::start(cargo_bin!("sigsuspend"), examples[1]);
    demo.wait_for("pause");
    // Once it sleeps in pause: a Ctrl-C in the window before it would be lost like the
    // SIGUSR1, until the alarm.
    let pid = demo.pid();
    assert!(eventually(Duration::from_secs(5), || proc_wchan(pid)
        .is_some_and(|place| place.contains("pause"))));
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
}

#[test]
fn newcomer_mistakes_get_one_line_and_a_closed_stdout_is_quiet() {
    assert_usage_error(demo(), &["--alarm", "0"]);
    assert_usage_error(demo(), &["--fast"]);
    assert_quiet_into_closed_pipe(cargo_bin!("sigsuspend"), &[&[]]);
}
