//! mqtt_workers: three shared workers split the jobs round robin; the master stays
//! single-threaded while the broker and the desk have threads, and each worker holds its
//! own socket; a killed worker is
//! respawned and every job's effect happens once; without the ledger the killed worker's
//! jobs are lost; a frozen worker is killed for its silence; the same against a real
//! mosquitto; --hosts puts workers in namespaces of their own; Ctrl-C and SIGKILL of the
//! master leave nothing.
//!
//! Book:    book/src/patterns/mqtt_workers.md

#[path = "../../../../tests/util/mod.rs"]
mod util;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use serde_json::Value;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("mqtt_workers")
}

/// The jobs each sensors slot (0, 1, 2) did, from the summary's split.
fn sensors_split(summary: &Value) -> [u64; 3] {
    let mut split = [0; 3];
    for entry in summary["split"].as_array().expect("split is a list") {
        if entry["route"] == "sensors/+/data" {
            split[entry["slot"].as_u64().expect("a slot") as usize] +=
                entry["jobs"].as_u64().unwrap_or(0);
        }
    }
    split
}

/// Every pid the run made (broker, desk, workers, namespace holders), from its events.
fn all_pids(events: &[Value]) -> Vec<i32> {
    let keys = ["broker", "desk", "worker", "holder"];
    (events.iter())
        .flat_map(|event| keys.iter().filter_map(|key| event[*key].as_i64()))
        .map(|pid| pid as i32)
        .collect()
}

fn threads(pid: i32) -> u64 {
    proc_status(pid, "Threads")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn assert_every_job_once(summary: &Value, jobs: u64) {
    assert_eq!(summary["jobs"], jobs + jobs / 10, "{summary}");
    assert_eq!(summary["results"], summary["jobs"], "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["exactly_once"], true, "{summary}");
}

/// The split, and the threads: while jobs run, the master has one thread, the broker and
/// the desk more than one, each worker one and a socket of its own.
fn assert_round_robin(broker: &[&str]) {
    let mut args = vec!["--jobs", "60"];
    args.extend_from_slice(broker);
    let mut running = Running::start(cargo_bin!("mqtt_workers"), &args);
    let published = running.wait_for("publish")["t"].as_f64().expect("t");
    assert_eq!(
        threads(running.pid()),
        1,
        "the master stays single-threaded"
    );
    for slot in 0..4 {
        let ready = running.wait_for_where("ready", |e| e["slot"] == slot);
        // The master publishes only once every worker has subscribed.
        assert!(ready["t"].as_f64() <= Some(published), "{ready}");
        let worker = pid_of(&ready["worker"]);
        // rumqttc's sync client runs a current-thread runtime: in the worker's one thread.
        assert_eq!(threads(worker), 1, "worker {worker}");
        // Forked with the stop signals blocked, and kept so: its loop sees SIGTERM.
        let blocked = proc_status(worker, "SigBlk").expect("SigBlk");
        let blocked = u64::from_str_radix(&blocked, 16).expect("hex");
        for signal in [libc::SIGINT, libc::SIGTERM] {
            assert_ne!(blocked & (1 << (signal - 1)), 0, "{worker}: {blocked:x}");
        }
        let fds = std::fs::read_dir(format!("/proc/{worker}/fd")).expect("its fds");
        let socket = fds.flatten().any(|fd| {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            target.to_string_lossy().starts_with("socket:")
        });
        assert!(socket, "worker {worker} holds its own socket to the broker");
    }
    if broker.is_empty() {
        let rumqttd = pid_of(&running.wait_for("broker")["broker"]);
        assert!(threads(rumqttd) > 1, "the embedded broker has threads");
    }
    let desk = pid_of(&running.wait_for("desk")["desk"]);
    assert!(threads(desk) > 1, "the desk has the client's threads");
    let (status, events) = running.finish();
    assert!(status.success(), "{status:?}");
    let summary = summary(&events);
    assert_every_job_once(summary, 60);
    for jobs in sensors_split(summary) {
        assert!((19..=21).contains(&jobs), "J/3 ± 1 each: {summary}");
    }
    // Every worker left on its SIGTERM: exit status 0.
    let reaped: Vec<&Value> = (events.iter())
        .filter(|e| e["event"] == "reaped" && e["worker"].is_i64())
        .collect();
    assert_eq!(reaped.len(), 4, "{reaped:?}");
    assert!(reaped.iter().all(|e| e["code"] == 0), "{reaped:?}");
    for pid in all_pids(&events) {
        assert_eq!(proc_state(pid), None, "{pid} is left behind");
    }
}

fn running_pid(pid: i32) -> bool {
    proc_state(pid).is_some()
}

#[test]
fn three_shared_workers_split_the_jobs_round_robin_and_only_broker_and_desk_have_threads() {
    assert_round_robin(&[]);
}

fn assert_kill_is_survived(broker: &[&str]) {
    let mut args = vec!["--jobs", "60", "--kill-worker-after", "10"];
    args.extend_from_slice(broker);
    let events = run_json(demo(), &args);
    let killed = pid_of(&find(&events, "kill")["worker"]);
    let reaped = events
        .iter()
        .find(|e| e["event"] == "reaped" && pid_of(&e["worker"]) == killed);
    assert_eq!(
        reaped.expect("the killed worker is reaped")["signal"],
        "SIGKILL",
        "{events:?}"
    );
    let spawns_in_slot_0 = events
        .iter()
        .filter(|e| e["event"] == "spawn" && e["slot"] == 0);
    assert_eq!(spawns_in_slot_0.count(), 2, "slot 0 gets a new worker");
    let summary = summary(&events);
    assert_every_job_once(summary, 60);
    assert!(
        summary["republished"].as_u64() > Some(0),
        "the ledger re-published: {summary}"
    );
}

#[test]
fn a_killed_worker_is_respawned_and_every_jobs_effect_happens_once() {
    assert_kill_is_survived(&[]);
}

fn assert_loss_without_ledger(broker: &[&str]) {
    let mut args = vec!["--jobs", "60", "--kill-worker-after", "10", "--no-ledger"];
    args.extend_from_slice(broker);
    let events = run_json(demo(), &args);
    let summary = summary(&events).clone();
    assert!(
        summary["lost"].as_u64() > Some(0),
        "the broker lost the dead member's jobs: {summary}"
    );
    // Every worker that subscribed is in the split, the new one in slot 0 too (0 jobs).
    let split = summary["split"].as_array().expect("split is a list");
    let ready: Vec<&Value> = events.iter().filter(|e| e["event"] == "ready").collect();
    assert_eq!(
        ready.len(),
        5,
        "four workers, then the killed one's successor"
    );
    for worker in ready {
        let listed = split
            .iter()
            .any(|entry| entry["worker"] == worker["worker"]);
        assert!(listed, "{worker} is not in the split: {summary}");
    }
    assert_eq!(summary["republished"], 0, "{summary}");
    assert_eq!(summary["exactly_once"], false, "{summary}");
}

#[test]
fn without_the_ledger_the_killed_workers_jobs_are_lost() {
    assert_loss_without_ledger(&[]);
}

#[test]
fn a_frozen_worker_is_killed_for_its_silence_and_replaced() {
    let events = run_json(demo(), &["--jobs", "30", "--freeze-worker-after", "5"]);
    let frozen = pid_of(&find(&events, "freeze")["worker"]);
    assert_eq!(
        pid_of(&find(&events, "unresponsive")["worker"]),
        frozen,
        "{events:?}"
    );
    assert_every_job_once(summary(&events), 30);
    assert_eq!(summary(&events)["unresponsive"], 1);
}

// ANCHOR: mosquitto
/// A mosquitto of the test's own, on a free port, with its own configuration file.
struct Mosquitto {
    process: Child,
    url: String,
    _dir: std::path::PathBuf,
}

impl Mosquitto {
    fn start() -> Option<Mosquitto> {
        if Command::new("mosquitto").arg("-h").output().is_err() {
            eprintln!("mosquitto is not installed (apt-get install mosquitto): skipped");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("proclab-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for its configuration");
        let config = dir.join("mosquitto.conf");
        let text = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        std::fs::write(&config, text).expect("write mosquitto.conf");
        let process = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .spawn()
            .expect("start mosquitto");
        let up = eventually(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "mosquitto listens on {port}");
        Some(Mosquitto {
            process,
            url: format!("mqtt://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

// ANCHOR_END: mosquitto

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[test]
fn against_a_real_mosquitto_the_split_the_kill_and_the_loss_are_the_same() {
    let Some(mosquitto) = Mosquitto::start() else {
        return;
    };
    let broker = ["--broker", mosquitto.url.as_str()];
    assert_round_robin(&broker);
    assert_kill_is_survived(&broker);
    assert_loss_without_ledger(&broker);
}

/// Starts `sh -c script` (with `PORT` in its environment); killed with its group on drop.
struct Shell(Child);

impl Shell {
    fn start(script: &str, port: &str) -> Shell {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .args(["-c", script])
            .env("PORT", port)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sh starts");
        std::thread::sleep(Duration::from_millis(500)); // subscribed before the demo starts
        Shell(child)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        send_signal(-(self.0.id() as i32), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn a_member_that_never_answers_takes_a_quarter_and_a_shell_loop_is_a_remote_worker() {
    // The chapter's "Look for yourself" and "On a second real machine", with mosquitto's
    // own clients.
    let Some(mosquitto) = Mosquitto::start() else {
        return;
    };
    let port = mosquitto.url.rsplit(':').next().expect("a port").to_owned();
    if Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("mosquitto_sub is not installed (mosquitto-clients): skipped");
        return;
    }
    let broker = ["--broker", mosquitto.url.as_str(), "--jobs", "60"];
    let silent = Shell::start(
        "exec mosquitto_sub -p $PORT -q 1 -t '$share/workers/sensors/+/data'",
        &port,
    );
    let events = run_json(demo(), &broker);
    drop(silent);
    let first_wave = (events.iter())
        .filter(|e| e["event"] == "republish" && e["attempt"] == 2)
        .count();
    assert!(
        (14..=16).contains(&first_wave),
        "a quarter of 60: {first_wave}"
    );
    assert_every_job_once(summary(&events), 60);

    let remote = Shell::start(
        "mosquitto_sub -p $PORT -q 1 -t '$share/workers/sensors/+/data' |
         while read -r job; do
           id=$(printf '%s' \"$job\" | sed -E 's/.*\"job\":([0-9]+).*/\\1/')
           mosquitto_pub -p $PORT -q 1 -t results/9 -m \"{\\\"job\\\":$id,\\\"slot\\\":9,\\\"worker\\\":$$}\"
         done",
        &port,
    );
    let events = run_json(demo(), &broker);
    drop(remote);
    let summary = summary(&events);
    assert_every_job_once(summary, 60);
    let remote_jobs: u64 = (summary["split"].as_array().expect("split").iter())
        .filter(|entry| entry["route"] == "remote")
        .map(|entry| entry["jobs"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        remote_jobs > 0,
        "the shell loop's results were accepted: {summary}"
    );
}

#[test]
fn resolving_a_host_name_gives_each_worker_a_second_thread() {
    // tokio starts a thread of its blocking pool to resolve `localhost`: the reason the
    // master keeps its client out of its own process (the desk).
    let Some(mosquitto) = Mosquitto::start() else {
        return;
    };
    let url = mosquitto.url.replace("127.0.0.1", "localhost");
    let mut running = Running::start(cargo_bin!("mqtt_workers"), &["--broker", &url]);
    let ready = running.wait_for_where("ready", |e| e["slot"] == 0);
    assert_eq!(threads(pid_of(&ready["worker"])), 2, "{ready}");
    let (status, events) = running.finish();
    assert!(status.success(), "{status:?}");
    assert_every_job_once(summary(&events), 60);
}

#[test]
fn with_hosts_workers_live_in_namespaces_of_their_own_and_nothing_is_left() {
    let denied = "needs CAP_SYS_ADMIN and CAP_NET_ADMIN";
    let probe = demo()
        .args(["--hosts", "1", "--jobs", "3"])
        .timeout(TIME_LIMIT)
        .output();
    let probe = probe.expect("the demo runs");
    let stderr = String::from_utf8_lossy(&probe.stderr);
    if probe.status.code() == Some(1) && stderr.contains(denied) {
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        eprintln!("skipped: {stderr}");
        return;
    }
    assert!(probe.status.success(), "{stderr}");
    let mut running = Running::start(
        cargo_bin!("mqtt_workers"),
        &["--hosts", "2", "--jobs", "30"],
    );
    running.wait_for("publish");
    let netns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let mine = netns(std::process::id() as i32);
    let holders: Vec<i32> = (1..=2)
        .map(|h| pid_of(&running.wait_for_where("host", |e| e["host"] == h)["holder"]))
        .collect();
    let spawn = running.wait_for_where("spawn", |e| e["slot"] == 0);
    let worker = pid_of(&spawn["worker"]);
    assert_ne!(
        netns(worker),
        mine,
        "a worker is not in the test's namespace"
    );
    assert_eq!(
        netns(worker),
        netns(holders[0]),
        "slot 0's worker is in host 1"
    );
    // The kernel's tables of each namespace: the broker's has the bridge and 10.77.0.1,
    // host h's an eth0 with 10.77.0.1h.
    let net = |pid: i32, table: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default()
    };
    let broker = pid_of(&running.wait_for("broker")["broker"]);
    assert!(
        net(broker, "dev").contains("br0:"),
        "{}",
        net(broker, "dev")
    );
    assert!(net(broker, "fib_trie").contains("10.77.0.1\n"));
    for (h, holder) in holders.iter().enumerate() {
        assert!(net(*holder, "dev").contains("eth0:"), "host {}", h + 1);
        let address = format!("10.77.0.{}\n", 11 + h);
        assert!(
            net(*holder, "fib_trie").contains(&address),
            "host {}",
            h + 1
        );
    }
    let named = || std::fs::read_dir("/run/netns").map_or(0, |dir| dir.count());
    let named_before = named();
    let (status, events) = running.finish();
    assert!(status.success(), "{status:?}");
    assert_every_job_once(summary(&events), 30);
    for pid in all_pids(&events) {
        assert_eq!(proc_state(pid), None, "{pid} is left behind");
    }
    assert_eq!(named(), named_before, "nothing is named in /run/netns");
}

#[test]
fn ctrl_c_and_sigkill_of_the_master_leave_no_process() {
    let mut running = Running::start(cargo_bin!("mqtt_workers"), &["--jobs", "3000"]);
    running.wait_for("publish");
    running.interrupt();
    let (status, events) = running.finish();
    assert_interrupted_cleanly(status, &all_pids(&events));

    let mut running = Running::start(cargo_bin!("mqtt_workers"), &["--jobs", "3000"]);
    running.wait_for("publish");
    let children = running.children();
    assert!(children.len() >= 6, "broker, desk, 4 workers: {children:?}");
    running.kill();
    for pid in children {
        assert!(
            eventually(Duration::from_secs(5), || !running_pid(pid)
                || proc_state(pid) == Some('Z')),
            "{pid} outlived the master"
        );
    }
}

#[test]
fn the_demos_package_does_not_depend_on_the_broker_or_the_client() {
    // `cargo run --bin zombie` never builds rumqttd or rumqttc: they are this package's.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |package: &str| {
        let output = Command::new(&cargo)
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                package,
            ])
            .output()
            .expect("cargo tree");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let ours = tree("mqtt_workers");
    assert!(
        ours.contains("rumqttd") && ours.contains("rumqttc"),
        "{ours}"
    );
    let demos = tree("proclab");
    assert!(
        !demos.contains("rumqtt") && !demos.contains("tokio"),
        "{demos}"
    );
}

#[test]
fn a_bad_broker_address_is_a_usage_error() {
    assert_usage_error(demo(), &["--broker", "nowhere"]);
    assert_usage_error(demo(), &["--jobs", "0"]);
}
