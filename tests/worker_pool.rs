//! worker_pool: every task completed exactly once, with W workers and with workers killed
//! under it; a hung task retried then failed; dynamic distribution beats static on
//! uneven tasks; map-reduce equals the sequential sum; Ctrl-C, SIGTERM and SIGKILL of the
//! master leave no worker;
//! a worker that crashes at start is not respawned in a storm.

mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use serde_json::Value;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("worker_pool")
}

/// Every pid that served in the pool, from the summary's `served` list.
fn served_pids(summary: &Value) -> Vec<i32> {
    summary["served"]
        .as_array()
        .expect("served is a list")
        .iter()
        .map(|served| pid_of(&served["pid"]))
        .collect()
}

fn assert_every_task_once(summary: &Value, tasks: u64) {
    assert_eq!(summary["tasks"], tasks, "{summary}");
    assert_eq!(summary["completed"], tasks, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["unfinished"], 0, "{summary}");
    assert_eq!(summary["duplicates_accepted"], 0, "{summary}");
    assert_eq!(summary["exactly_once"], true, "{summary}");
    assert_eq!(summary["every_task_once"], true, "{summary}");
    let per_worker: u64 = summary["per_worker"]
        .as_array()
        .expect("per_worker is a list")
        .iter()
        .map(|count| count.as_u64().expect("a count"))
        .sum();
    assert_eq!(per_worker, tasks, "per-worker counts add up: {summary}");
}

/// The test's own check, from /proc: no process that served in the pool is left.
fn assert_no_worker_left(events: &[Value]) {
    for pid in spawned_pids(events) {
        assert_eq!(proc_state(pid), None, "worker {pid} is left behind");
    }
}

#[test]
fn every_task_is_completed_exactly_once() {
    for workers in ["1", "4"] {
        let events = run_json(demo(), &["--workers", workers, "--tasks", "1000"]);
        let summary = summary(&events);
        assert_every_task_once(summary, 1000);
        assert_eq!(summary["duplicates_discarded"], 0, "{summary}");
        assert_eq!(summary["respawns"], 0, "{summary}");
        assert_eq!(summary["distribution"], "dynamic");
        let count: usize = workers.parse().expect("W");
        assert_eq!(summary["per_worker"].as_array().expect("list").len(), count);
        // Every worker ended on its stop message: exit status 0.
        let served = summary["served"].as_array().expect("served");
        assert_eq!(served.len(), count, "{summary}");
        assert!(served.iter().all(|w| w["code"] == 0), "{summary}");
        assert_no_worker_left(&events);
    }
}

#[test]
fn killed_workers_are_replaced_and_no_task_is_lost_or_doubled() {
    for distribution in ["dynamic", "static"] {
        killed_workers_are_replaced(distribution);
    }
}

fn killed_workers_are_replaced(distribution: &str) {
    let events = run_json(
        demo(),
        &[
            "--workers",
            "4",
            "--tasks",
            "1000",
            "--task-cost",
            "uniform",
            "--kill-worker-every",
            "50",
            "--distribution",
            distribution,
        ],
    );
    let summary = summary(&events);
    assert_every_task_once(summary, 1000);
    assert!(
        summary["respawns"].as_u64().expect("respawns") >= 1,
        "{summary}"
    );
    assert_eq!(summary["workers_alive_at_end"], 4, "back to W: {summary}");
    // The kernel's word for it: four workers were sent a stop message, and each exited
    // with status 0 because of it — so each was alive when the work ended.
    let stopped = pids_in(&find(&events, "stop")["workers"]);
    assert_eq!(stopped.len(), 4, "{summary}");
    for pid in stopped {
        let served = summary["served"].as_array().expect("served");
        let ended = served
            .iter()
            .find(|w| pid_of(&w["pid"]) == pid)
            .expect("served");
        assert_eq!(ended["code"], 0, "{ended}");
    }
    let killed = events.iter().filter(|e| e["event"] == "kill").count();
    assert!(killed >= 1, "{summary}");
    // Each killed worker died by SIGKILL, as the kernel reported to waitpid.
    let by_sigkill = summary["served"]
        .as_array()
        .expect("served")
        .iter()
        .filter(|w| w["signal"] == "SIGKILL")
        .count();
    assert_eq!(by_sigkill, killed, "{summary}");
    assert_eq!(served_pids(summary).len(), spawned_pids(&events).len());
    // A worker holds one task at most, and the master knows which: each reaped worker
    // that held a task gives back exactly that one, and no result came twice (the master
    // read the pipe before it re-queued).
    let held: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "reaped" && !e["held"].is_null())
        .map(|e| &e["held"])
        .collect();
    let requeued: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "requeued")
        .map(|e| &e["task"])
        .collect();
    assert_eq!(held, requeued, "{summary}");
    assert_eq!(summary["duplicates_discarded"], 0, "{summary}");
    // Killed by the master: not a crash at start, so no backoff.
    assert!(!events.iter().any(|e| e["event"] == "backoff"), "{summary}");
    assert_no_worker_left(&events);
}

#[test]
fn a_hung_task_is_retried_then_reported_failed() {
    let events = run_json(
        demo(),
        &[
            "--workers",
            "2",
            "--tasks",
            "50",
            "--hang-task",
            "7",
            "--timeout",
            "0.3",
            "--retries",
            "2",
        ],
    );
    let summary = summary(&events);
    assert_eq!(summary["completed"], 49, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["failed_tasks"], serde_json::json!([7]), "{summary}");
    assert_eq!(summary["retried"], 2, "{summary}");
    let timeouts = events.iter().filter(|e| e["event"] == "timeout").count();
    assert_eq!(timeouts, 3, "one try and two retries, each timed out");
    // The hung worker sends no heartbeat: the master noticed before the timeout.
    let silent = events
        .iter()
        .filter(|e| e["event"] == "silent")
        .collect::<Vec<_>>();
    assert!(
        !silent.is_empty() && silent.iter().all(|e| e["task"] == 7),
        "{silent:?}"
    );
    assert_no_worker_left(&events);
}

#[test]
fn a_hung_worker_is_reported_silent_before_its_timeout_kills_it() {
    // The chapter's and --help's example (issue 16): with a timeout longer than the
    // 300 ms of silence, each try of the hung task is first reported silent, then killed.
    let events = run_json(
        demo(),
        &[
            "--tasks",
            "50",
            "--hang-task",
            "7",
            "--timeout",
            "0.5",
            "--retries",
            "1",
        ],
    );
    let of = |name: &str| -> Vec<(i32, f64)> {
        let named = events.iter().filter(|e| e["event"] == name);
        named
            .map(|e| (pid_of(&e["worker"]), e["t"].as_f64().expect("t")))
            .collect()
    };
    let (silent, timeouts) = (of("silent"), of("timeout"));
    assert_eq!(timeouts.len(), 2, "one try and one retry: {timeouts:?}");
    // Silent means 300 ms without a heartbeat: never sooner after the start.
    assert!(silent.iter().all(|(_, at)| *at >= 0.3), "{silent:?}");
    for (worker, killed_at) in timeouts {
        let said = silent.iter().find(|(pid, _)| *pid == worker);
        let (_, said_at) = said.unwrap_or_else(|| panic!("{worker} was never said silent"));
        assert!(
            killed_at - said_at >= 0.1,
            "silent at {said_at}s, killed at {killed_at}s"
        );
    }
    assert_eq!(summary(&events)["failed_tasks"], serde_json::json!([7]));
}

#[test]
fn dynamic_beats_static_on_uneven_tasks() {
    // 200 tasks on 4 workers; the first 50 take 20 ms, the rest 1 ms. Static gives all
    // 50 slow ones to worker 0: about 1.0 s. Dynamic spreads them: about 0.3 s. Measured
    // here: 0.30 s against 1.01 s. Tasks sleep, so the ratio does not depend on the
    // number of CPUs; the margin (dynamic under 60% of static) leaves room for a slow VM.
    let events = run_json(
        demo(),
        &[
            "--workers",
            "4",
            "--tasks",
            "200",
            "--task-cost",
            "uneven",
            "--compare",
        ],
    );
    // Issue 15: from more than one run: dynamic, static, … 3 times each, in turn (5 `run`
    // events, then the summary: the last static run), and the medians compared.
    let runs: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "run").collect();
    let summary = summary(&events);
    let all = runs.iter().copied().chain([summary]);
    let distributions: Vec<&str> = all
        .clone()
        .map(|r| r["distribution"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        distributions,
        [
            "dynamic", "static", "dynamic", "static", "dynamic", "static"
        ]
    );
    all.clone().for_each(|run| assert_every_task_once(run, 200));
    let seconds = |way: &str| {
        let runs = all.clone().filter(|r| r["distribution"] == way);
        let mut seconds: Vec<f64> = runs
            .map(|r| r["seconds"].as_f64().expect("seconds"))
            .collect();
        assert_eq!(
            summary[format!("{way}_runs")],
            serde_json::json!(seconds),
            "{summary}"
        );
        seconds.sort_by(f64::total_cmp);
        seconds[1] // the median of 3
    };
    let (dynamic, fixed) = (seconds("dynamic"), seconds("static"));
    assert_eq!(
        summary["dynamic_seconds"].as_f64(),
        Some(dynamic),
        "the median"
    );
    assert_eq!(
        summary["static_seconds"].as_f64(),
        Some(fixed),
        "the median"
    );
    assert!(dynamic < 0.6 * fixed, "dynamic {dynamic}s, static {fixed}s");
    // Static: one block of T/W tasks per worker, the slow ones all in worker 0's.
    assert_eq!(summary["per_worker"], serde_json::json!([50, 50, 50, 50]));
}

#[test]
fn map_reduce_survives_killed_workers() {
    // An independent check that no task was lost while workers were being killed: each
    // task's slice sum is in shared memory, and the master's reduction must equal the sum
    // the master computes itself over the whole array.
    let events = run_json(
        demo(),
        &[
            "--workers",
            "3",
            "--tasks",
            "300",
            "--map-reduce",
            "--task-cost",
            "uniform",
            "--kill-worker-every",
            "20",
            "--retries",
            "0",
        ],
    );
    let summary = summary(&events);
    assert!(
        summary["respawns"].as_u64().expect("respawns") >= 1,
        "{summary}"
    );
    assert_every_task_once(summary, 300);
    assert_eq!(summary["map_reduce_ok"], true, "{summary}");
    assert_eq!(summary["map_reduce_sum"], summary["sequential_sum"]);
}

#[test]
fn map_reduce_equals_the_sequential_sum() {
    let events = run_json(
        demo(),
        &["--workers", "3", "--tasks", "200", "--map-reduce"],
    );
    let summary = summary(&events);
    assert_every_task_once(summary, 200);
    assert!(summary["sequential_sum"].as_u64().expect("sum") > 0);
    assert_eq!(summary["map_reduce_sum"], summary["sequential_sum"]);
    // The shared memory is anonymous: nothing named in /dev/shm, during or after.
    let demo_pid = summary["pid"].as_u64().expect("pid");
    let left = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .contains(&format!(".{demo_pid}."))
        });
    assert!(
        !left,
        "a shared-memory object of {demo_pid} is left in /dev/shm"
    );
}

/// A run long enough to interrupt: 100,000 tasks of 2 ms on 2 workers.
const LONG_RUN: [&str; 6] = [
    "--workers",
    "2",
    "--tasks",
    "100000",
    "--task-cost",
    "uniform",
];

#[test]
fn ctrl_c_lets_running_tasks_finish_and_leaves_no_worker() {
    let mut running = Running::start(cargo_bin!("worker_pool"), &LONG_RUN);
    running.wait_for_where("spawn", |e| e["slot"] == 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    running.interrupt();
    let (status, events) = running.finish();
    let summary = summary(&events);
    assert_eq!(summary["interrupted"], "SIGINT", "{summary}");
    // The workers ignored the group's Ctrl-C, finished their task, and ended on a stop
    // message: nobody was killed.
    let served = summary["served"].as_array().expect("served");
    assert!(served.iter().all(|w| w["code"] == 0), "{summary}");
    assert_interrupted_cleanly(status, &spawned_pids(&events));
}

#[test]
fn sigterm_stops_the_pool_cleanly() {
    let mut running = Running::start(cargo_bin!("worker_pool"), &LONG_RUN);
    running.wait_for_where("spawn", |e| e["slot"] == 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    running.terminate();
    let (status, events) = running.finish();
    let summary = summary(&events);
    assert_eq!(summary["interrupted"], "SIGTERM", "{summary}");
    let completed = summary["completed"].as_u64().expect("completed");
    assert!(completed > 0, "{summary}");
    assert_eq!(summary["unfinished"], 100_000 - completed, "{summary}");
    assert_eq!(summary["exactly_once"], true, "{summary}");
    let served = summary["served"].as_array().expect("served");
    assert!(served.iter().all(|w| w["code"] == 0), "{summary}");
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn a_task_longer_than_the_grace_is_killed_after_it() {
    // Task 0 hangs (the timeout is far away); the others take 2 ms. After SIGTERM the
    // idle workers stop on their message; the one holding task 0 is killed when the
    // 0.3 s grace ends.
    let mut args = LONG_RUN.to_vec();
    args.extend(["--hang-task", "0", "--timeout", "60", "--grace", "0.3"]);
    let mut running = Running::start(cargo_bin!("worker_pool"), &args);
    running.wait_for_where("spawn", |e| e["slot"] == 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    running.terminate();
    let stopping = running.wait_for("stopping");
    let (status, events) = running.finish();
    let summary = summary(&events);
    // The hung task at least (the other worker may be between two tasks).
    assert!(stopping["running_tasks"].as_u64() >= Some(1), "{stopping}");
    let stopped = summary["t"].as_f64().expect("t") - stopping["t"].as_f64().expect("t");
    assert!(stopped >= 0.3, "the grace was waited out: {stopped}s");
    let served = summary["served"].as_array().expect("served");
    let killed: Vec<&Value> = served.iter().filter(|w| w["signal"] == "SIGKILL").collect();
    assert_eq!(killed.len(), 1, "{summary}");
    assert_eq!(served.len() - killed.len(), 1, "{summary}");
    let stop = find(&events, "stop");
    assert_eq!(
        pids_in(&stop["killed"]),
        vec![pid_of(&killed[0]["pid"])],
        "{stop}"
    );
    assert_eq!(
        summary["unfinished"],
        100_000 - summary["completed"].as_u64().expect("n")
    );
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn sigkill_of_the_master_kills_its_workers() {
    let mut running = Running::start(cargo_bin!("worker_pool"), &LONG_RUN);
    let workers = [0, 1]
        .map(|slot| pid_of(&running.wait_for_where("spawn", |e| e["slot"] == slot)["worker"]));
    running.kill();
    // Their parent-death signal is SIGKILL: they die with the master (their zombies
    // are then reaped by whoever adopted them).
    let gone = eventually(std::time::Duration::from_secs(5), || {
        workers.iter().all(|&pid| !util::running(pid))
    });
    assert!(gone, "workers {workers:?} outlived their master");
}

#[test]
fn workers_that_crash_at_start_lead_to_backoff_then_a_clear_error() {
    let events = run_json_failing(demo(), &["--workers", "2", "--crash-at-start"], "giving up");
    let spawns = spawned_pids(&events);
    // Five crashes in a row on a slot and the pool gives up: at most 2 × 5 forks.
    assert!(spawns.len() <= 10, "{} forks", spawns.len());
    let backoffs = events.iter().filter(|e| e["event"] == "backoff").count();
    assert!(backoffs >= 4, "{backoffs} backoffs");
    for pid in spawns {
        assert_eq!(proc_state(pid), None, "worker {pid} is left behind");
    }
}

#[test]
fn one_crashing_slot_waits_100_200_400_800_ms_then_gives_up_without_failing_a_task() {
    let events = run_json_failing(demo(), &["--workers", "1", "--crash-at-start"], "giving up");
    let at = |name: &str| -> Vec<f64> {
        let named = events.iter().filter(|e| e["event"] == name);
        named.map(|e| e["t"].as_f64().expect("t")).collect()
    };
    let spawns = at("spawn");
    assert_eq!(spawns.len(), 5, "five crashes in a row, then no more forks");
    let delays: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "backoff")
        .map(|e| e["delay_seconds"].as_f64().expect("delay"))
        .collect();
    assert_eq!(delays, [0.1, 0.2, 0.4, 0.8], "twice as long each time");
    for (pair, delay) in spawns.windows(2).zip(&delays) {
        assert!(
            pair[1] - pair[0] >= *delay,
            "forked again too soon: {spawns:?}"
        );
    }
    // Each worker exited with status 3, as the kernel told waitpid.
    let reaped = events.iter().filter(|e| e["event"] == "reaped");
    assert!(reaped.clone().count() == 5 && reaped.clone().all(|e| e["code"] == 3));
    // The task a crashing worker held went back without costing it an attempt.
    assert!(!events.iter().any(|e| e["event"] == "failed"), "{events:?}");
}

/// The pipes `pid` holds at fd 3 and above: (inode, opened for writing), from /proc.
fn pipes_held(pid: i32) -> Vec<(String, bool)> {
    let mut pipes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
    {
        let fd: u32 = entry.file_name().to_string_lossy().parse().expect("fd");
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy().into_owned();
        if fd < 3 || !target.starts_with("pipe:") || inherited_pipes().contains(&target) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info.lines().find_map(|line| line.strip_prefix("flags:"));
        let flags = u32::from_str_radix(flags.expect("flags").trim(), 8).expect("octal");
        pipes.push((target, flags & 0o3 == 0o1)); // O_WRONLY
    }
    pipes.sort();
    pipes
}

/// Pipes the test process holds itself (a jobserver, say): the demo may inherit them.
fn inherited_pipes() -> Vec<String> {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("own fds")
        .flatten();
    fds.filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("pipe:"))
        .collect()
}

#[test]
fn a_worker_holds_only_its_own_task_pipe_and_the_result_pipe_and_blocks_the_stop_signals() {
    let mut running = Running::start(cargo_bin!("worker_pool"), &LONG_RUN);
    let workers = [0, 1]
        .map(|slot| pid_of(&running.wait_for_where("spawn", |e| e["slot"] == slot)["worker"]));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let master = pipes_held(running.pid());
    let [first, second] = workers.map(pipes_held);
    for (worker, pipes) in workers.iter().zip([&first, &second]) {
        assert_eq!(pipes.len(), 2, "worker {worker}: {pipes:?}");
        let (write_ends, read_ends): (Vec<_>, Vec<_>) = pipes.iter().partition(|p| p.1);
        let (result, task) = (&write_ends[0].0, &read_ends[0].0);
        // The result pipe: the master holds both ends; the task pipe: its write end only.
        let ends_in_master = |inode: &String| master.iter().filter(|p| &p.0 == inode).count();
        assert_eq!(
            ends_in_master(result),
            2,
            "{worker}: {pipes:?}, master {master:?}"
        );
        assert_eq!(
            ends_in_master(task),
            1,
            "{worker}: {pipes:?}, master {master:?}"
        );
        assert!(master.contains(&(task.clone(), true)), "{master:?}");
        let blocked = proc_status(*worker, "SigBlk").expect("SigBlk");
        let blocked = u64::from_str_radix(&blocked, 16).expect("hex mask");
        for signal in [libc::SIGINT, libc::SIGTERM] {
            assert_ne!(
                blocked & (1 << (signal - 1)),
                0,
                "{worker}: SigBlk {blocked:x}"
            );
        }
    }
    let results = |pipes: &[(String, bool)]| pipes.iter().find(|p| p.1).cloned();
    assert_eq!(results(&first), results(&second), "one result pipe, shared");
    assert_ne!(first, second, "a task pipe each");
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn a_stopped_worker_is_reported_silent_and_one_killed_from_outside_is_replaced() {
    // The chapter's "Look for yourself": kill -STOP a worker, then kill -9 it.
    let mut running = Running::start(cargo_bin!("worker_pool"), &LONG_RUN);
    let worker = pid_of(&running.wait_for_where("spawn", |e| e["slot"] == 0)["worker"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    send_signal(worker, libc::SIGSTOP);
    let silent = running.wait_for_where("silent", |e| pid_of(&e["worker"]) == worker);
    assert_eq!(proc_state(worker), Some('T'), "{silent}");
    send_signal(worker, libc::SIGKILL);
    let reaped = running.wait_for_where("reaped", |e| pid_of(&e["worker"]) == worker);
    assert_eq!(reaped["signal"], "SIGKILL", "{reaped}");
    running.wait_for_where("requeued", |e| e["task"] == reaped["held"]);
    running.wait_for_where("spawn", |e| {
        e["slot"] == 0 && pid_of(&e["worker"]) != worker
    });
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--workers"))
        .stdout(contains("--kill-worker-every"));
    assert_usage_error(demo(), &["--workers", "0"]);
    assert_usage_error(demo(), &["--tasks", "-1"]);
    assert_usage_error(demo(), &["--tasks", "0"]);
    assert_usage_error(
        demo(),
        &["--hang-task", "5", "--tasks", "3", "--timeout", "1"],
    );
    assert_usage_error(demo(), &["--hang-task", "1"]); // without --timeout it would hang
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("worker_pool"),
        &[
            &["--tasks", "1000"],
            &["--json", "--kill-worker-every", "20"],
        ],
    );
}

#[test]
fn every_help_example_shows_what_it_promises() {
    // Issue 16: each example at the end of --help is run, and shows its effect.
    let help = run(demo(), &["--help"]).get_output().stdout.clone();
    let help = String::from_utf8(help).expect("UTF-8");
    let examples: Vec<&str> = help
        .split_once("Examples:\n")
        .expect("an Examples section")
        .1
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(examples.len(), 7, "{examples:?}");
    for example in examples {
        let args: Vec<&str> = example.split_whitespace().skip(1).collect();
        let kills = |events: &[Value]| events.iter().filter(|e| e["event"] == "kill").count();
        match example {
            "worker_pool" | "worker_pool --workers 4 --tasks 1000" => {
                let events = run_json(demo(), &args);
                assert_every_task_once(summary(&events), 1000);
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let workers = if args.is_empty() { cpus.min(64) } else { 4 };
                assert_eq!(
                    summary(&events)["workers"],
                    workers,
                    "one per CPU by default"
                );
                assert_no_worker_left(&events);
            }
            "worker_pool --task-cost uniform --kill-worker-every 50" => {
                let events = run_json(demo(), &args);
                assert_every_task_once(summary(&events), 1000);
                assert!(kills(&events) >= 1, "no worker was killed");
                assert!(summary(&events)["respawns"].as_u64() >= Some(1));
            }
            "worker_pool --tasks 200 --task-cost uneven --compare" => {
                let events = run_json(demo(), &args);
                let summary = summary(&events);
                let dynamic = summary["dynamic_seconds"].as_f64().expect("seconds");
                let fixed = summary["static_seconds"].as_f64().expect("seconds");
                assert!(dynamic < fixed, "dynamic {dynamic}s, static {fixed}s");
            }
            "worker_pool --hang-task 7 --timeout 0.5 --retries 1" => {
                let events = run_json(demo(), &args);
                let named = |name| events.iter().filter(|e| e["event"] == name).count();
                assert!(named("silent") >= 2, "said silent before each timeout");
                assert_eq!(named("timeout"), 2, "one try and one retry");
                assert_eq!(summary(&events)["failed_tasks"], serde_json::json!([7]));
            }
            "worker_pool --crash-at-start" => {
                let events = run_json_failing(demo(), &args, "giving up");
                assert!(events.iter().any(|e| e["event"] == "backoff"));
            }
            "worker_pool --map-reduce" => {
                let events = run_json(demo(), &args);
                let summary = summary(&events);
                assert_eq!(summary["map_reduce_ok"], true, "{summary}");
                assert_eq!(summary["map_reduce_sum"], summary["sequential_sum"]);
            }
            _ => panic!("no check for the example `{example}`"),
        }
    }
}

#[test]
fn the_timeline_counts_in_words_one_worker_one_task_one_loss() {
    // "1 worker, 1 task", and a task lost once is "lost 1 time", never "1 workers".
    let assert = run(
        demo(),
        &[
            "--workers",
            "1",
            "--tasks",
            "1",
            "--hang-task",
            "0",
            "--timeout",
            "0.2",
            "--retries",
            "0",
        ],
    ); // a failed task: the run's status is the test above's concern
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        text.contains("1 worker, 1 task, dynamic distribution"),
        "{text}"
    );
    assert!(
        text.contains("task 0 failed: lost 1 time, retries exhausted"),
        "{text}"
    );
}

#[test]
fn compare_says_which_distribution_was_faster_and_by_how_much() {
    let assert = run(
        demo(),
        &[
            "--workers",
            "4",
            "--tasks",
            "200",
            "--task-cost",
            "uneven",
            "--compare",
        ],
    )
    .success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for n in 1..=5 {
        assert!(
            text.contains(&format!("] run {n} of 6: 200 of 200 tasks")),
            "{text}"
        );
    }
    // "…; medians of 3 runs each, in turn: dynamic 0.299s (0.296–0.299), static 1.012s
    // (1.011–1.016): dynamic was 3.4× faster": the ratio is that of the medians.
    let verdict = text.lines().last().unwrap_or_default();
    let number = |text: &str| text.parse::<f64>().expect(verdict);
    let (_, medians) = verdict
        .split_once("; medians of 3 runs each, in turn: dynamic ")
        .expect(verdict);
    let (dynamic, rest) = medians.split_once("s (").expect(verdict);
    let (_, rest) = rest.split_once("), static ").expect(verdict);
    let (fixed, rest) = rest.split_once("s (").expect(verdict);
    let (_, rest) = rest.split_once("): dynamic was ").expect(verdict);
    let ratio = number(rest.strip_suffix("× faster").expect(verdict));
    assert!(ratio > 2.0, "{verdict}");
    let medians_ratio = number(fixed) / number(dynamic);
    assert!((ratio - medians_ratio).abs() < 0.06, "{verdict}");
}
