//! ctx_switch: every mode gives positive, finite round trips; on one CPU the kernel counts
//! at least one switch per round trip on each side (all voluntary under SCHED_BATCH);
//! nothing is left running.
//!
//! The tests that run pinned ping-pongs hold a lock, so that they never compete with
//! each other for the CPU they measure on.

mod examples;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use std::os::unix::process::CommandExt;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("ctx_switch")
}

static CPU: Mutex<()> = Mutex::new(());

/// Quick mode: 1200 round trips per repetition, 5 repetitions (fixed): 6000 timed.
const QUICK: [&str; 2] = ["--rounds", "1200"];

fn modes(args: &[&str]) -> Vec<Value> {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut all = QUICK.to_vec();
    all.extend_from_slice(args);
    let events = run_json(demo(), &all);
    summary(&events)["modes"].as_array().expect("modes").clone()
}

fn per_side(mode: &Value, key: &str) -> [u64; 2] {
    let sides = mode[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key}: {mode}"));
    assert_eq!(sides.len(), 2, "{mode}");
    [0, 1].map(|side| sides[side].as_u64().expect("a count"))
}

#[test]
fn every_mode_reports_positive_finite_round_trips() {
    let modes = modes(&[]);
    let names: Vec<&str> = modes
        .iter()
        .map(|mode| mode["mode"].as_str().expect("mode"))
        .collect();
    if usable_cpus() >= 2 {
        assert_eq!(names, ["same-cpu", "cross-cpu", "threads"]);
    } else {
        eprintln!("one CPU: cross-cpu is skipped");
        assert_eq!(names, ["same-cpu", "threads"]);
    }
    for mode in &modes {
        assert_eq!(mode["rounds"], 6000, "{mode}");
        for key in ["round_trip_us", "min_us", "max_us"] {
            let value = mode[key].as_f64().expect("a number");
            assert!(value > 0.0 && value.is_finite(), "{key}: {mode}");
        }
        let cpus = mode["cpus"].as_array().expect("cpus");
        assert_eq!(cpus[0] == cpus[1], mode["mode"] != "cross-cpu", "{mode}");
    }
}

/// CPUs this test process may use.
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn on_one_cpu_each_side_is_switched_out_at_least_once_per_round_trip() {
    // The byte cannot come back unless the partner runs, and on one CPU it can only run
    // if this side is switched out: at least one switch per round trip, on each side.
    // With the default policy some are involuntary (the woken partner preempts the writer).
    // Two threads on one CPU likewise (the demo reads each thread's own counters, in
    // /proc/<pid>/task/<tid>/status).
    let threads = modes(&["--mode", "threads"]);
    for mode in modes(&["--mode", "same-cpu"]).iter().chain(&threads) {
        let rounds = mode["rounds"].as_u64().expect("rounds");
        let voluntary = per_side(mode, "voluntary_switches");
        let involuntary = per_side(mode, "involuntary_switches");
        for side in 0..2 {
            let all = voluntary[side] + involuntary[side];
            assert!(all >= rounds, "side {side}: {mode}");
            // And about one: a round trip does not cost each side two switches.
            assert!(all * 2 <= rounds * 3, "side {side}: {mode}");
            // Wake-up preemption: about half are involuntary here (0.42-0.45 of them,
            // idle or busy); without it (SCHED_BATCH, the next test) almost none are.
            assert!(involuntary[side] * 10 >= rounds, "side {side}: {mode}");
        }
    }
}

#[test]
fn under_sched_batch_every_round_trip_costs_a_voluntary_switch_on_each_side() {
    // No wake-up preemption: each side runs until it blocks in read(), so each switch is
    // one it asked for — unless another process on the same CPU preempts a side at a
    // tick, after which the answer may be waiting and that side never blocks. Measured:
    // 1.00 of the switches voluntary on a quiet 2-CPU VM, 0.85-1.00 with a busy loop on
    // the same CPU; with the default policy, 0.55. 0.8 separates the two.
    for mode in modes(&["--mode", "same-cpu", "--policy", "batch"]) {
        let rounds = mode["rounds"].as_u64().expect("rounds");
        let voluntary = per_side(&mode, "voluntary_switches");
        let involuntary = per_side(&mode, "involuntary_switches");
        for side in 0..2 {
            let all = voluntary[side] + involuntary[side];
            assert!(all >= rounds, "side {side}: {mode}");
            assert!(voluntary[side] * 10 >= all * 8, "side {side}: {mode}");
        }
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["--rounds", "0"][..],
        &["--rounds", "abc"],
        &["--repetitions", "3"], // gone: the demo always repeats 5 times
        &["--mode", "sideways"],
        &["--policy", "fifo"],
    ] {
        assert_usage_error(demo(), args);
    }
    // A mode this machine cannot run, asked for by name, is an error, not an empty table.
    let mut one_cpu = assert_cmd::Command::new("taskset");
    let allowed = proc_status(std::process::id() as i32, "Cpus_allowed_list").expect("CPUs");
    let first: String = allowed.chars().take_while(char::is_ascii_digit).collect();
    one_cpu.args(["-c", &first]).arg(cargo_bin!("ctx_switch"));
    run(one_cpu, &["--mode", "cross-cpu"])
        .code(1)
        .stderr(contains("needs two CPUs"));
    run(demo(), &["--help"])
        .success()
        .stdout(contains("lat_ctx"))
        .stdout(contains("Examples:"));
}

#[test]
fn ctrl_c_leaves_no_partner_running() {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Running::start(
        cargo_bin!("ctx_switch"),
        &["--mode", "same-cpu", "--rounds", "10000000"],
    );
    demo.wait_for("method");
    let partner = demo.wait_for_children();
    // Both sides pinned to the same single CPU, as the kernel sees them, and running there
    // (field 39 of /proc/<pid>/stat: the CPU it last ran on), under the normal policy
    // (field 41: 0 is SCHED_OTHER).
    let pinned = proc_status(demo.pid(), "Cpus_allowed_list").expect("the demo's CPUs");
    assert!(pinned.parse::<usize>().is_ok(), "one CPU: {pinned}");
    assert_eq!(
        proc_status(partner[0], "Cpus_allowed_list"),
        Some(pinned.clone())
    );
    for pid in [demo.pid(), partner[0]] {
        assert_eq!(proc_stat_field(pid, 39), Some(pinned.clone()), "{pid}");
        assert_eq!(proc_stat_field(pid, 41).as_deref(), Some("0"), "{pid}");
    }
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &partner);
    assert!(events.iter().all(|event| event["event"] != "summary"));
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut json = vec!["--json"];
    json.extend_from_slice(&QUICK);
    assert_quiet_into_closed_pipe(cargo_bin!("ctx_switch"), &[&QUICK, &json]);
}

#[test]
fn each_help_example_shows_what_it_promises() {
    // Each example is run as --help gives it, with the quick --rounds added.
    let examples: &[&[&str]] = &[&[], &["--mode", "same-cpu", "--policy", "batch"]];
    examples::assert_help_examples(cargo_bin!("ctx_switch"), examples);
    // `ctx_switch`: the table of all three modes (cross-cpu where there are two CPUs).
    let all = modes(examples[0]);
    assert_eq!(all.len(), if usable_cpus() >= 2 { 3 } else { 2 }, "{all:?}");
    // `--policy batch`: (almost) every switch voluntary, as the other test explains.
    for mode in modes(examples[1]) {
        let voluntary = per_side(&mode, "voluntary_switches");
        let involuntary = per_side(&mode, "involuntary_switches");
        for side in 0..2 {
            assert!(
                voluntary[side] * 10 >= (voluntary[side] + involuntary[side]) * 8,
                "{mode}"
            );
        }
    }
}

#[test]
fn across_two_cpus_nearly_every_switch_is_voluntary() {
    // Each side has a CPU of its own: nothing preempts it while it could run, it only
    // blocks in read(). 1.00 + 0.00 here, idle or under load; 0.8 allows for a neighbour.
    if usable_cpus() < 2 {
        eprintln!("one CPU: no cross-cpu mode");
        return;
    }
    let normal = modes(&["--mode", "cross-cpu"]);
    let batch = modes(&["--mode", "cross-cpu", "--policy", "batch"]);
    for mode in normal.iter().chain(&batch) {
        let voluntary = per_side(mode, "voluntary_switches");
        let involuntary = per_side(mode, "involuntary_switches");
        for side in 0..2 {
            assert!(
                voluntary[side] * 10 >= (voluntary[side] + involuntary[side]) * 8,
                "{mode}"
            );
        }
    }
}

#[test]
fn on_one_cpu_all_skips_cross_cpu_and_says_so() {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let allowed = proc_status(std::process::id() as i32, "Cpus_allowed_list").expect("CPUs");
    let first: String = allowed.chars().take_while(char::is_ascii_digit).collect();
    let mut one_cpu = assert_cmd::Command::new("taskset");
    one_cpu.args(["-c", &first]).arg(cargo_bin!("ctx_switch"));
    let events = run_json(one_cpu, &QUICK);
    assert!(
        find(&events, "skipped")["text"]
            .as_str()
            .is_some_and(|text| text.contains("two CPUs"))
    );
    let names: Vec<&str> = summary(&events)["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .map(|mode| mode["mode"].as_str().expect("mode"))
        .collect();
    assert_eq!(names, ["same-cpu", "threads"]);
}

#[test]
fn across_two_cpus_the_kernel_runs_each_side_on_its_own_cpu() {
    if usable_cpus() < 2 {
        eprintln!("one CPU: no cross-cpu mode");
        return;
    }
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Running::start(
        cargo_bin!("ctx_switch"),
        &["--mode", "cross-cpu", "--rounds", "10000000"],
    );
    demo.wait_for("method");
    let partner = demo.wait_for_children()[0];
    let cpu_of = |pid: i32| {
        let allowed = proc_status(pid, "Cpus_allowed_list")?;
        allowed.parse::<usize>().ok()?; // a single CPU
        (proc_stat_field(pid, 39)? == allowed).then_some(allowed)
    };
    // The partner pins itself just after the fork: give it a moment.
    let placed = eventually(
        Duration::from_secs(5),
        || matches!((cpu_of(demo.pid()), cpu_of(partner)), (Some(a), Some(b)) if a != b),
    );
    assert!(placed, "{:?} {:?}", cpu_of(demo.pid()), cpu_of(partner));
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[partner]);
}

#[test]
fn sched_batch_is_the_policy_the_kernel_holds_for_both_sides() {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Running::start(
        cargo_bin!("ctx_switch"),
        &[
            "--mode", "same-cpu", "--policy", "batch", "--rounds", "10000000",
        ],
    );
    demo.wait_for("method");
    let partner = demo.wait_for_children()[0]; // forked after the policy was set: inherited
    for pid in [demo.pid(), partner] {
        // Field 41 of /proc/<pid>/stat: the policy; SCHED_BATCH is 3.
        assert_eq!(proc_stat_field(pid, 41).as_deref(), Some("3"), "{pid}");
    }
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[partner]);
}

#[test]
fn sched_batch_needs_no_privilege() {
    // As root, the demo runs as an unprivileged uid (std sets it after fork, before exec).
    let mut command = std::process::Command::new(cargo_bin!("ctx_switch"));
    // SAFETY: getuid(2) only returns a number.
    if unsafe { libc::getuid() } == 0 {
        command.uid(65534).gid(65534);
    }
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let demo = assert_cmd::Command::from_std(command);
    let args = ["--mode", "same-cpu", "--policy", "batch", "--rounds", "200"];
    let events = run_json(demo, &args); // run_json sets the time limit
    assert_eq!(summary(&events)["policy"], "batch");
    assert_eq!(find(&events, "policy")["event"], "policy");
}

#[test]
fn in_threads_mode_the_two_sides_are_two_tasks_of_one_process_on_one_cpu() {
    let _cpu = CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Running::start(
        cargo_bin!("ctx_switch"),
        &["--mode", "threads", "--rounds", "10000000"],
    );
    demo.wait_for("method");
    let me = demo.pid();
    let tasks = || -> Vec<i32> {
        let entries = std::fs::read_dir(format!("/proc/{me}/task")).expect("/proc/<pid>/task");
        entries
            .filter_map(|task| task.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || tasks().len() == 2),
        "{:?}",
        tasks()
    );
    let pinned = proc_status(me, "Cpus_allowed_list").expect("the demo's CPUs");
    assert!(pinned.parse::<usize>().is_ok(), "one CPU: {pinned}");
    for tid in tasks() {
        assert_eq!(proc_status(tid, "Tgid"), Some(me.to_string()), "{tid}");
        let place = || proc_status(tid, "Cpus_allowed_list") == Some(pinned.clone());
        assert!(
            eventually(Duration::from_secs(5), place),
            "{tid} pins itself"
        );
    }
    assert!(demo.children().is_empty(), "no process is forked");
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
    assert!(events.iter().all(|event| event["event"] != "summary"));
}
