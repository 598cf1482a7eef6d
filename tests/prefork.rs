//! prefork: every request answered exactly once in each dispatch mode; workers killed under
//! load are replaced in their slot within a second, with no wrong reply; SIGTERM and the
//! first Ctrl-C let requests in flight finish and cut off at the grace time what takes
//! longer; a second Ctrl-C stops at once; SIGHUP replaces every worker without refusing a
//! connection; workers that crash at start make the master give up; a restarted server
//! binds its port at once (SO_REUSEADDR); nothing is left.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use serde_json::Value;
use util::*;

const MODES: [&str; 3] = ["shared-accept", "round-robin", "least-loaded"];

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("prefork")
}

/// Starts a server (with `--json`); returns it and its port once `workers` are ready.
fn server(args: &[&str], workers: usize) -> (Running, u16) {
    let mut running = Running::start(cargo_bin!("prefork"), args);
    let listening = running.wait_for("listening");
    let port = listening["port"].as_u64().expect("the port") as u16;
    for slot in 0..workers {
        running.wait_for_where("ready", |event| event["slot"] == slot);
    }
    (running, port)
}

/// Starts `prefork client --json --port P` with `args`.
fn start_client(port: u16, args: &[&str]) -> std::process::Child {
    Command::new(cargo_bin!("prefork"))
        .args(["client", "--json", "--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts")
}

/// Waits for a client (killed after TIME_LIMIT); returns its exit status and summary.
fn client_summary(mut client: std::process::Child) -> (ExitStatus, Value) {
    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = client.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("the client did not end within {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    let pipe = client.stdout.as_mut().expect("stdout is piped");
    pipe.read_to_end(&mut stdout)
        .expect("read the client's output");
    (status, summary(&events(&stdout)).clone())
}

/// The HTTP request for `path`, as curl sends it.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// The status code and body of a whole HTTP reply (its Content-Length exactly the body's
/// length, and `Connection: close`); panics on anything else.
fn status_and_body(reply: &str) -> (u16, String) {
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("a status line");
    let status = status.strip_prefix("HTTP/1.1 ").expect("HTTP/1.1")[..3]
        .parse()
        .expect("a status code");
    let headers: Vec<&str> = lines.collect();
    assert!(headers.contains(&"Connection: close"), "{reply:?}");
    assert!(
        headers.contains(&format!("Content-Length: {}", body.len()).as_str()),
        "{reply:?}"
    );
    (status, body.to_owned())
}

/// One HTTP GET on its own connection: the body of a 200 reply.
fn body_of(port: u16, path: &str) -> String {
    let (status, body) = status_and_body(&ask(port, &get(path)).expect("a reply"));
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// One request on its own connection: what came back before the server closed it.
fn ask(port: u16, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(TIME_LIMIT))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Sends `GET /slow/ms/tag` on a thread; the thread returns the reply's body ("" if none
/// came) and when it came.
fn ask_slowly(port: u16, ms: u64, tag: &str) -> std::thread::JoinHandle<(String, Instant)> {
    let request = get(&format!("/slow/{ms}/{tag}"));
    std::thread::spawn(move || {
        let reply = ask(port, &request).unwrap_or_default(); // reset: no reply
        let body = match reply.is_empty() {
            true => reply,
            false => status_and_body(&reply).1,
        };
        (body, Instant::now())
    })
}

fn assert_every_request_answered(client: &Value, requests: u64) {
    assert_eq!(client["requests"], requests, "{client}");
    assert_eq!(client["ok"], requests, "{client}");
    assert_eq!(client["mismatched"], 0, "{client}");
    assert_eq!(client["failed"], 0, "{client}");
}

/// The kernel's count of the process's open descriptors, at rest: the fewest of five
/// looks 20 ms apart (a master passing on a connection holds it for a moment, and one
/// reading /proc/self/fd holds the directory open).
fn fd_count(pid: i32) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("/proc/<pid>/fd")
                .count()
        })
        .min()
        .expect("five looks")
}

/// How many of the process's descriptors are sockets (`socket:[inode]` in /proc).
fn sockets_held(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// No worker, and no self-test client, is left: every pid that spoke in the timeline or
/// was forked, the master's aside, is gone.
fn assert_no_process_left(events: &[Value]) {
    let spoke = events
        .iter()
        .filter(|event| event["role"] != "master")
        .map(|event| pid_of(&event["pid"]));
    for pid in spawned_pids(events).into_iter().chain(spoke) {
        assert_eq!(proc_state(pid), None, "{pid} is left behind");
    }
}

/// Waits until `count` of the server's workers sleep in a SLOW request: the kernel's
/// word that the requests are being served (the worker's wchan is `hrtimer_nanosleep`).
fn wait_until_serving(running: &Running, count: usize) {
    let serving = eventually(Duration::from_secs(10), || {
        let sleeping = running
            .children()
            .into_iter()
            .filter(|&worker| proc_wchan(worker).is_some_and(|wchan| wchan.contains("nanosleep")));
        sleeping.count() == count
    });
    assert!(serving, "{count} workers never slept in SLOW together");
}

#[test]
fn every_request_is_answered_exactly_once_in_each_dispatch_mode() {
    for mode in MODES {
        let args = ["--self-test", "--dispatch", mode];
        let events = run_json(demo(), &[&args[..], &["--connections", "8"]].concat());
        let summary = summary(&events);
        let client = &summary["client"];
        assert_every_request_answered(client, 2000);
        assert_eq!(client["errors"], 0, "{mode}: {client}");
        assert_eq!(summary["served"], 2000, "{mode}: {summary}");
        assert_eq!(summary["dropped"], 0, "{mode}: {summary}");
        assert_eq!(summary["spawns"], 4, "{mode}: {summary}");
        assert_eq!(summary["shutdown"], "graceful", "{mode}: {summary}");
        // What the workers counted on the scoreboard is what the client saw.
        assert_eq!(
            summary["per_worker"], client["per_worker"],
            "{mode}: {summary}"
        );
        let per_worker: Vec<u64> =
            serde_json::from_value(client["per_worker"].clone()).expect("a list of counts");
        match mode {
            // By turn, with every worker always ready: exactly R / W each.
            "round-robin" => assert_eq!(per_worker, [500; 4], "{summary}"),
            // The kernel (or the master) spreads the connections: nobody is left idle.
            _ => assert!(
                per_worker.len() == 4 && per_worker.iter().all(|&n| n > 0),
                "{mode}: {per_worker:?}"
            ),
        }
        assert_no_process_left(&events);
    }
}

#[test]
fn workers_killed_under_load_are_replaced_and_no_reply_is_wrong() {
    for mode in MODES {
        let (running, port) = server(&["--workers", "4", "--dispatch", mode], 4);
        let fds_at_start = fd_count(running.pid());
        // At least 8000 × 1 ms / 4 workers = 2 s of load: it outlasts the eight kills.
        let client = start_client(
            port,
            &["--connections", "8", "--requests", "8000", "--slow-ms", "1"],
        );
        let mut kills = 0;
        for round in 0..8u64 {
            std::thread::sleep(Duration::from_millis(200));
            let workers = running.children();
            assert_eq!(workers.len(), 4, "{mode}: {workers:?}");
            let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().expect("clock");
            let victim = workers[(nanos.subsec_nanos() as u64 + round) as usize % 4];
            send_signal(victim, libc::SIGKILL);
            kills += 1;
            let replaced = eventually(Duration::from_secs(1), || {
                let now = running.children();
                now.len() == 4 && !now.contains(&victim)
            });
            assert!(replaced, "{mode}: no replacement for {victim} within 1 s");
        }
        let (status, report) = client_summary(client);
        assert!(status.success(), "{mode}: {report}");
        assert_every_request_answered(&report, 8000);
        // Every fork and kill left the master's descriptors as they were, and each worker
        // holds one socket: the listening socket, or its own channel to the master (not
        // a dead worker's, not another's).
        assert_eq!(fd_count(running.pid()), fds_at_start, "{mode}");
        for worker in running.children() {
            assert_eq!(sockets_held(worker), 1, "{mode}: worker {worker}");
        }
        running.terminate();
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
        let summary = summary(&events);
        assert_eq!(summary["spawns"], 4 + kills, "{mode}: {summary}");
        assert_eq!(summary["respawns"], kills, "{mode}: {summary}");
        assert_eq!(summary["start_failures"], 0, "{mode}: {summary}");
        assert_eq!(summary["shutdown"], "graceful", "{mode}: {summary}");
        assert_eq!(
            summary["fds_before_stop"], summary["fds_after_start"],
            "{summary}"
        );
    }
}

#[test]
fn a_graceful_stop_lets_requests_in_flight_finish_and_refuses_new_ones() {
    // Ctrl-C to the whole group (the workers get it too, and must not die of it), and
    // SIGTERM to the master alone.
    for (mode, stop) in [
        ("shared-accept", libc::SIGINT),
        ("round-robin", libc::SIGTERM),
    ] {
        let (mut running, port) = server(&["--dispatch", mode, "--grace", "6"], 4);
        let slow: Vec<_> = (0..3)
            .map(|n| ask_slowly(port, 2000, &format!("slow{n}")))
            .collect();
        wait_until_serving(&running, 3);
        let stopped = Instant::now();
        match stop {
            libc::SIGINT => running.interrupt(),
            _ => running.terminate(),
        }
        // Stopped accepting: a new connection is refused.
        let stopping = running.wait_for("stopping")["t"].as_f64().expect("t");
        // The idle worker leaves at once (its accept() fails with EINVAL), long before
        // the slow requests end.
        let idle_gone = running.wait_for("reaped")["t"].as_f64().expect("t");
        assert!(
            idle_gone - stopping < 1.0,
            "{mode}: {stopping} -> {idle_gone}"
        );
        let refused = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.kind());
        assert_eq!(
            refused.err(),
            Some(std::io::ErrorKind::ConnectionRefused),
            "{mode}"
        );
        for (n, request) in slow.into_iter().enumerate() {
            let (reply, _) = request.join().expect("the request thread");
            assert!(
                reply.starts_with(&format!("slow{n} worker ")),
                "{mode}: {reply:?}"
            );
        }
        let (status, events) = running.finish();
        let took = stopped.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "{mode}: took {took:?}, grace 6 s"
        );
        assert_stopped_cleanly(status, stop, &spawned_pids(&events));
        let summary = summary(&events);
        assert_eq!(summary["shutdown"], "graceful", "{mode}: {summary}");
        assert_eq!(summary["in_flight_at_shutdown"], 3, "{mode}: {summary}");
        assert_eq!(summary["cut_off"], 0, "{mode}: {summary}");
    }
}

#[test]
fn a_request_longer_than_the_grace_period_is_cut_off_at_the_grace_time() {
    for mode in ["shared-accept", "least-loaded"] {
        let (running, port) = server(&["--dispatch", mode, "--grace", "1"], 4);
        let slow = ask_slowly(port, 10_000, "long");
        wait_until_serving(&running, 1);
        let stopped = Instant::now();
        running.terminate();
        let (reply, cut) = slow.join().expect("the request thread");
        assert_eq!(reply, "", "{mode}: no reply to a request that was cut off");
        // On the test's clock: cut off after the grace, long before the request's end
        // (loose: the master may see the signal late on a busy machine)…
        let after = cut.duration_since(stopped).as_secs_f64();
        assert!(
            (0.8..=3.0).contains(&after),
            "{mode}: cut off after {after} s"
        );
        let (status, events) = running.finish();
        // …and on the master's: SIGKILL at the grace time, ±20%.
        let grace_used = find(&events, "kill")["t"].as_f64().expect("t")
            - find(&events, "stopping")["t"].as_f64().expect("t");
        assert!(
            (0.8..=1.2).contains(&grace_used),
            "{mode}: SIGKILL {grace_used} s after the stop began"
        );
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
        let summary = summary(&events);
        assert_eq!(summary["shutdown"], "forced", "{mode}: {summary}");
        assert_eq!(summary["in_flight_at_shutdown"], 1, "{mode}: {summary}");
        assert_eq!(summary["cut_off"], 1, "{mode}: {summary}");
    }
}

#[test]
fn sigterm_to_the_whole_group_replaces_nobody() {
    // `kill -TERM -PGID`, or systemd stopping the service's control group: the workers
    // get SIGTERM too, finish and leave — and the master must not replace them.
    for grace in ["5", "0"] {
        let (running, _port) = server(&["--workers", "3", "--grace", grace], 3);
        send_signal(-running.pid(), libc::SIGTERM);
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
        let summary = summary(&events);
        assert_eq!(summary["spawns"], 3, "{summary}");
        assert_eq!(summary["respawns"], 0, "{summary}");
        // Nothing was held, so nothing was cut off, even with no grace at all.
        assert_eq!(summary["shutdown"], "graceful", "{summary}");
    }
}

#[test]
fn more_connections_than_requests_is_fine() {
    let events = run_json(
        demo(),
        &["--self-test", "--connections", "8", "--requests", "3"],
    );
    assert_every_request_answered(&summary(&events)["client"], 3);
}

#[test]
fn a_second_ctrl_c_stops_at_once() {
    // Ctrl-C twice; or Ctrl-C then SIGTERM: any second stop signal means "now".
    for second_signal in [libc::SIGINT, libc::SIGTERM] {
        let (mut running, port) = server(&["--grace", "20"], 4);
        let slow = ask_slowly(port, 20_000, "long");
        wait_until_serving(&running, 1);
        running.interrupt();
        running.wait_for("stopping");
        let second = Instant::now();
        match second_signal {
            libc::SIGINT => running.interrupt(),
            _ => running.terminate(),
        }
        let (status, events) = running.finish();
        let took = second.elapsed();
        assert!(took < Duration::from_millis(1000), "took {took:?}");
        assert_interrupted_cleanly(status, &spawned_pids(&events));
        assert_eq!(summary(&events)["shutdown"], "forced");
        assert_eq!(summary(&events)["cut_off"], 1);
        let (reply, _) = slow.join().expect("the request thread");
        assert_eq!(reply, "");
    }
}

#[test]
fn connections_still_in_the_listen_queue_are_reset_by_a_stop() {
    // One worker, busy with a slow request: the next connection waits in the listen
    // queue, accepted by the kernel but by no worker; shutdown() resets it.
    let (running, port) = server(&["--workers", "1"], 1);
    let slow = ask_slowly(port, 2000, "slow");
    wait_until_serving(&running, 1);
    let queued = std::thread::spawn(move || ask(port, &get("/echo/queued")));
    std::thread::sleep(Duration::from_millis(200)); // it is connected, in the queue
    running.terminate();
    let reply = queued.join().expect("the queued request's thread");
    assert!(
        reply.as_ref().map_or(true, String::is_empty),
        "a queued connection got {reply:?}"
    );
    let (reply, _) = slow.join().expect("the slow request's thread");
    assert!(reply.starts_with("slow worker 0 "), "{reply:?}");
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
    assert_eq!(summary(&events)["in_flight_at_shutdown"], 1);
}

#[test]
fn a_client_that_trickles_its_request_is_dropped_at_the_deadline() {
    // Slowloris: one byte a second, never a whole request head. The worker gives it 5 s.
    let (running, port) = server(&["--workers", "1"], 1);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let connected = Instant::now();
    let mut writer = stream.try_clone().expect("a second handle");
    std::thread::spawn(move || {
        for _ in 0..20 {
            if writer.write_all(b"E").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    stream.set_read_timeout(Some(TIME_LIMIT)).expect("timeout");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply); // EOF or reset, when the worker drops it
    let after = connected.elapsed().as_secs_f64();
    assert_eq!(reply, "");
    assert!((4.5..8.0).contains(&after), "dropped after {after} s");
    // The worker is free again.
    assert!(body_of(port, "/echo/next").starts_with("next worker 0 "));
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn seconds_stops_the_server_gracefully() {
    let events = run_json(demo(), &["--workers", "2", "--seconds", "0.5"]);
    let summary = summary(&events);
    assert_eq!(summary["stop_reason"], "served for 0.5s", "{summary}");
    assert_eq!(summary["shutdown"], "graceful", "{summary}");
    assert_eq!(summary["interrupted"], Value::Null, "{summary}");
    assert_no_process_left(&events);
}

#[test]
fn sighup_replaces_every_worker_without_refusing_a_connection() {
    for mode in ["shared-accept", "round-robin"] {
        let (mut running, port) = server(&["--workers", "3", "--dispatch", mode], 3);
        let before = running.children();
        // --retries 0: a refused or reset connection would fail the client.
        let client = start_client(
            port,
            &[
                "--connections",
                "6",
                "--requests",
                "3000",
                "--slow-ms",
                "1",
                "--retries",
                "0",
            ],
        );
        std::thread::sleep(Duration::from_millis(200));
        // To the whole group (a closed terminal) in shared-accept: the workers ignore it,
        // the master rolls them; to the master alone in round-robin.
        match mode {
            "shared-accept" => send_signal(-running.pid(), libc::SIGHUP),
            _ => send_signal(running.pid(), libc::SIGHUP),
        }
        // One at a time: slot k is retired only once slot k-1's new worker is ready.
        let mut previous_ready = 0.0;
        for slot in 0..3 {
            let retire = running.wait_for_where("retire", |event| event["slot"] == slot);
            let t = retire["t"].as_f64().expect("t");
            assert!(t >= previous_ready, "{mode}: slot {slot} retired at {t}");
            let old = pid_of(&retire["worker"]);
            let ready = running.wait_for_where("ready", |event| {
                event["slot"] == slot
                    && pid_of(&event["pid"]) != old
                    && !before.contains(&pid_of(&event["pid"]))
            });
            previous_ready = ready["t"].as_f64().expect("t");
        }
        let (status, report) = client_summary(client);
        assert!(status.success(), "{mode}: {report}");
        assert_every_request_answered(&report, 3000);
        assert_eq!(report["errors"], 0, "{mode}: {report}");
        assert_eq!(report["refused"], 0, "{mode}: {report}");
        let rolled = eventually(Duration::from_secs(2), || {
            let now = running.children();
            now.len() == 3 && now.iter().all(|pid| !before.contains(pid))
        });
        assert!(rolled, "{mode}: {before:?} -> {:?}", running.children());
        running.terminate();
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
        let summary = summary(&events);
        assert_eq!(summary["rolled"], 3, "{mode}: {summary}");
        assert_eq!(summary["spawns"], 6, "{mode}: {summary}");
        assert_eq!(summary["respawns"], 0, "{mode}: {summary}");
        for pid in before {
            assert_eq!(proc_state(pid), None, "{pid} was replaced and reaped");
        }
    }
}

#[test]
fn workers_that_crash_at_start_lead_to_backoff_then_a_clear_error() {
    let started = Instant::now();
    let events = run_json_failing(demo(), &["--workers", "2", "--crash-at-start"], "giving up");
    assert!(!events.iter().any(|event| event["event"] == "summary"));
    let spawns = spawned_pids(&events);
    // Five deaths in a row before ready, on one slot, and the master gives up: at most
    // 2 × 5 forks, after 0.1 + 0.2 + 0.4 + 0.8 s of backoff.
    assert!((5..=10).contains(&spawns.len()), "{} forks", spawns.len());
    let delays: Vec<f64> = events
        .iter()
        .filter(|event| event["event"] == "backoff" && event["slot"] == 0)
        .map(|event| event["delay_seconds"].as_f64().expect("a delay"))
        .collect();
    assert_eq!(delays[..4], [0.1, 0.2, 0.4, 0.8], "{delays:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in spawns {
        assert_eq!(proc_state(pid), None, "worker {pid} is left behind");
    }
}

#[test]
fn the_scoreboard_is_shared_memory_that_status_reads() {
    let (running, port) = server(&["--workers", "2"], 2);
    let workers = running.children();
    assert_eq!(workers.len(), 2);
    for &worker in &workers {
        // The kernel's view: shared-accept workers sleep in accept() on the shared socket…
        let in_accept = eventually(Duration::from_secs(2), || {
            proc_wchan(worker).as_deref() == Some("inet_csk_accept")
        });
        assert!(in_accept, "{worker} waits in {:?}", proc_wchan(worker));
        // …and map the scoreboard shared (`s`), anonymous: nothing named in /dev/shm.
        let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).expect("maps");
        assert!(
            maps.lines()
                .any(|line| line.contains("rw-s") && line.ends_with("/dev/zero (deleted)")),
            "{maps}"
        );
        assert!(!maps.contains("/dev/shm/"), "{maps}");
    }
    let status: Value = serde_json::from_str(&body_of(port, "/status")).expect("JSON");
    assert!(workers.contains(&pid_of(&status["pid"])), "{status}");
    let rows = status["rows"].as_array().expect("rows");
    let listed: Vec<i32> = rows.iter().map(|row| pid_of(&row["pid"])).collect();
    for row in rows {
        // Idle workers beat every 250 ms (SO_RCVTIMEO on accept()).
        let age = row["heartbeat_age"].as_f64().expect("a heartbeat age");
        assert!(age < 1.0, "{status}");
    }
    let (mut listed, mut workers) = (listed, workers);
    listed.sort();
    workers.sort();
    assert_eq!(listed, workers, "{status}");
    let (code, body) = status_and_body(&ask(port, &get("/hello")).expect("a reply"));
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "requests are: GET /echo/<tag>, GET /slow/<ms>/<tag>, GET /status\n"
    );
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    run(demo(), &["--port", &port])
        .code(1)
        .stderr(contains(format!("port {port} is in use")));
}

#[test]
fn a_restarted_server_binds_its_port_while_old_connections_are_in_time_wait() {
    // The worker closes each connection first, so the server's end of it waits in
    // TIME_WAIT for a minute after the server has gone: only SO_REUSEADDR lets the next
    // server bind the port now.
    let (running, port) = server(&["--workers", "1"], 1);
    let reply = body_of(port, "/echo/first");
    assert!(reply.starts_with("first worker 0 "), "{reply:?}");
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
    let events = run_json(
        demo(),
        &[
            "--port",
            &port.to_string(),
            "--workers",
            "1",
            "--seconds",
            "0.3",
        ],
    );
    assert_eq!(find(&events, "listening")["port"], port);
}

#[test]
fn the_client_fails_when_nobody_answers() {
    // A port nobody listens on: every attempt refused, then exit status 1.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("address").port();
    drop(free);
    let (status, report) = client_summary(start_client(
        port,
        &["--requests", "4", "--connections", "2", "--retries", "1"],
    ));
    assert_eq!(status.code(), Some(1));
    assert_eq!(report["failed"], 4, "{report}");
    assert_eq!(report["refused"], 8, "{report}");
}

/// Issue 15: with nothing answered the client said "0 requests/s, latency p50 0.000 ms,
/// p99 0.000 ms"; and 1 request in 4.9 s was "0 requests/s". It now says that no request
/// was answered, and a rate below 10/s has a decimal, in the JSON and in the text.
#[test]
fn the_client_reports_no_statistics_of_nothing_and_slow_rates_with_a_decimal() {
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("address").port().to_string();
    drop(free);
    let args = [
        "client",
        "--port",
        &port,
        "--requests",
        "4",
        "--retries",
        "1",
    ];
    let output = run(demo(), &args).code(1);
    let text = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    let line = text.lines().last().expect("the client's summary");
    assert!(line.contains("; no request was answered; "), "{line}");
    assert!(
        !line.contains("requests/s") && !line.contains("p50"),
        "{line}"
    );
    // 2 requests of 300 ms, one at a time: about 3 per second, not 0 or 3.
    let args = [
        "--self-test",
        "--workers",
        "1",
        "--connections",
        "1",
        "--requests",
        "2",
    ];
    let args = [&args[..], &["--slow-ms", "300"]].concat();
    let output = run(demo(), &args).success();
    let text = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    let client = summary(&run_json(demo(), &args))["client"].clone();
    let rps = client["rps"].as_f64().expect("rps");
    let exact = 2.0 / client["seconds"].as_f64().expect("seconds");
    assert!((rps - exact).abs() <= 0.05 && rps < 10.0, "{client}");
    let rates = text.lines().filter(|line| line.contains(" requests/s, "));
    for line in rates.collect::<Vec<_>>() {
        let (before, _) = line.split_once(" requests/s, ").expect(line);
        let rate = before.rsplit_once("; ").expect(line).1;
        assert!(rate.contains('.') && rate != "0.0", "{line}");
    }
    assert_eq!(text.matches(" requests/s, ").count(), 2, "{text}");
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--dispatch"))
        .stdout(contains("SIGHUP"));
    run(demo(), &["client", "--help"])
        .success()
        .stdout(contains("--connections"));
    for bad in [
        &["--workers", "0"][..],
        &["--workers", "65"],
        &["--dispatch", "random"],
        &["--grace", "-1"],
        &["--port", "65536"],
        &["--seconds", "0"],
        &["--connections", "3"], // load options without --self-test
        &["--self-test", "--connections", "0"],
        &["--self-test", "--seconds", "1"],
        &["client"], // no --port
        &["client", "--port", "0"],
        &["client", "--port", "8080", "--slow-ms", "60001"],
    ] {
        assert_usage_error(demo(), bad);
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("prefork"),
        &[
            &["--self-test"],
            &["--self-test", "--dispatch", "least-loaded"],
        ],
    );
}

#[test]
fn sigkill_of_the_master_takes_its_workers_along() {
    let (running, _port) = server(&["--workers", "3"], 3);
    let workers = running.children();
    let status = running.kill();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for worker in workers {
        // Parent-death signal: they die with the master (and PID 1 reaps them).
        let gone = eventually(Duration::from_secs(5), || !util::running(worker));
        assert!(gone, "worker {worker} outlived its master");
    }
}

#[test]
fn idle_connections_do_not_starve_the_defended_server() {
    // Issue 16: 8 connections that send nothing (reopened when dropped) and 4 workers.
    // TCP_DEFER_ACCEPT keeps them from accept(); the load finishes as if they were not.
    for mode in ["shared-accept", "round-robin"] {
        let (running, port) = server(&["--workers", "4", "--dispatch", mode], 4);
        let started = Instant::now();
        let client = start_client(
            port,
            &["--idle", "8", "--requests", "500", "--connections", "8"],
        );
        let (status, report) = client_summary(client);
        let took = started.elapsed();
        assert!(status.success(), "{mode}: {report}");
        assert_every_request_answered(&report, 500);
        assert!(
            took < Duration::from_secs(2),
            "{mode}: took {took:?}: {report}"
        );
        running.terminate();
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
        assert_eq!(find(&events, "listening")["idle_defence"], true);
    }
}

#[test]
fn an_idle_connection_is_held_back_by_the_kernel_then_dropped_at_its_first_byte_deadline() {
    // With the defence, the kernel keeps a silent connection from accept() for the defer
    // time (5 s, rounded up to SYN-ACK retransmissions), then lets it through, and the
    // worker drops it after 0.2 s; without it, the worker takes it at once and waits 5 s.
    for (defence, kept_back, held_for) in [
        (&[][..], 4.0..10.0, 0.1..1.0),
        (&["--no-idle-defence"][..], 0.0..0.5, 4.5..6.0),
    ] {
        let (running, port) = server(&[&["--workers", "1"], defence].concat(), 1);
        let worker = running.children()[0];
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(TIME_LIMIT)).expect("timeout");
        let connected = Instant::now();
        // The kernel's word: the worker sleeps reading a connection, not in accept().
        let taken = eventually(Duration::from_secs(12), || {
            proc_wchan(worker).as_deref() == Some("wait_woken")
        });
        assert!(taken, "{defence:?}: the worker never took the connection");
        let taken = Instant::now();
        let mut nothing = Vec::new();
        let _ = stream.read_to_end(&mut nothing); // end-of-file: the worker dropped it
        assert!(nothing.is_empty());
        let (kept, held) = (
            taken.duration_since(connected).as_secs_f64(),
            taken.elapsed().as_secs_f64(),
        );
        assert!(kept_back.contains(&kept), "{defence:?}: kept back {kept} s");
        assert!(held_for.contains(&held), "{defence:?}: held {held} s");
        running.terminate();
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
    }
}

#[test]
fn the_client_gives_up_about_2_s_after_the_server_goes_away() {
    // Nobody listening: every attempt refused; the default load of 2000 requests would
    // have taken 2000 × 21 attempts / 8 threads × 5 ms = 26 s.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("address").port();
    drop(free);
    let started = Instant::now();
    let (status, report) = client_summary(start_client(port, &[]));
    assert!(started.elapsed() < Duration::from_secs(3), "{report}");
    assert_eq!(status.code(), Some(1));
    assert_eq!(report["gave_up"], true, "{report}");
    assert_eq!(report["failed"], 2000, "{report}");
    // A server stopped in the middle of the load: the client reports within about 2 s.
    let (running, port) = server(&["--workers", "2"], 2);
    let client = start_client(port, &["--requests", "1000000", "--slow-ms", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
    let gone = Instant::now();
    let (status, report) = client_summary(client);
    let after = gone.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "{after:?} after the server: {report}"
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(report["gave_up"], true, "{report}");
    assert_eq!(report["mismatched"], 0, "{report}");
    assert!(report["ok"].as_u64() > Some(0), "{report}");
}

#[test]
fn a_closed_stdout_stops_a_server_gracefully() {
    // `prefork | head -1`: the server stops as SIGTERM would, reaps, and exits 0.
    let mut command = Command::new(cargo_bin!("prefork"));
    command
        .args(["--json", "--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = command.spawn().expect("the server starts");
    let mut stdout = std::io::BufReader::new(process.stdout.take().expect("piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("the first line");
    let listening: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(listening["event"], "listening");
    let master = process.id() as i32;
    let workers = eventually(Duration::from_secs(5), || children_of(master).len() == 2);
    assert!(workers, "two workers");
    let workers = children_of(master);
    drop(stdout); // as `head -1` does
    let ended = eventually(Duration::from_secs(5), || {
        process.try_wait().expect("try_wait").is_some()
    });
    assert!(ended, "the server runs on with its stdout closed");
    let status = process.wait().expect("wait");
    let stderr = std::io::read_to_string(process.stderr.take().expect("piped")).expect("stderr");
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(stderr, "", "nobody complains");
    for worker in workers {
        assert_eq!(proc_state(worker), None, "worker {worker} is left");
    }
}

/// The examples at the end of `--help`: (command, what it promises).
fn help_examples(help: &str) -> Vec<(String, String)> {
    let examples = help
        .split_once("Examples:\n")
        .expect("an Examples section")
        .1;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in examples.lines() {
        match line.strip_prefix("      ") {
            Some(promise) => pairs.last_mut().expect("a command first").1 = promise.into(),
            None => pairs.push((line.trim().to_owned(), String::new())),
        }
    }
    pairs
}

/// Runs a shell command (curl, wrk) with a time limit; its stdout.
fn shell(command: &str) -> String {
    let mut shell = Command::new("sh");
    shell.args(["-c", command]).stdin(Stdio::null());
    let output = output_within(shell, TIME_LIMIT).expect("the command ends in time");
    String::from_utf8_lossy(&output).into_owned()
}

#[test]
fn every_help_example_shows_what_it_promises() {
    let help = run(demo(), &["--help"]).get_output().stdout.clone();
    let examples = help_examples(&String::from_utf8(help).expect("UTF-8"));
    assert_eq!(examples.len(), 10, "{examples:?}");
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("address").port().to_string();
    drop(free);
    let mut serving = None;
    for (example, promise) in examples {
        let command = example.replace("8080", &port);
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let tool = example.split_whitespace().next().expect("a command");
        if tool != "prefork" && shell(&format!("command -v {tool}")).is_empty() {
            eprintln!("{tool} is not installed: `{example}` not run");
            continue;
        }
        let client = |events: &[Value]| summary(events)["client"].clone();
        match example.as_str() {
            "prefork --self-test" => {
                assert_every_request_answered(&client(&run_json(demo(), &args)), 2000)
            }
            "prefork --self-test --dispatch round-robin" => {
                let client = client(&run_json(demo(), &args));
                assert_eq!(
                    client["per_worker"],
                    serde_json::json!([500, 500, 500, 500]),
                    "{client}"
                );
            }
            e if e.contains("--slow-ms 20") => {
                let client = client(&run_json(demo(), &args));
                assert_every_request_answered(&client, 2000);
                assert!(client["p99_ms"].as_f64() >= Some(20.0), "{client}");
            }
            "prefork --self-test --idle 8 --requests 500" => {
                let client = client(&run_json(demo(), &args));
                assert_every_request_answered(&client, 500);
                assert!(client["seconds"].as_f64() < Some(2.0), "{client}");
            }
            e if e.contains("--no-idle-defence") => {
                let client = client(&run_json(demo(), &args));
                assert_every_request_answered(&client, 2);
                assert!(client["seconds"].as_f64() >= Some(4.5), "{client}");
                assert!(client["idle_dropped"].as_u64() >= Some(2), "{client}");
            }
            e if e.starts_with("prefork --port") => {
                let workers = args[3].parse().expect("--workers W");
                let (running, _) = server(&args, workers);
                serving = Some(running);
            }
            e if e.starts_with("prefork client") => {
                let (status, report) = client_summary(start_client_with(&args));
                assert!(status.success(), "{report}");
                assert_every_request_answered(&report, 2000);
            }
            e if e.starts_with("curl -i") => {
                let reply = shell(&command).replace("\r\n", "\n");
                assert!(reply.starts_with("HTTP/1.1 200 OK\n"), "{reply}");
                assert!(reply.contains("\nConnection: close\n"), "{reply}");
                assert!(reply.contains("\nContent-Length: "), "{reply}");
                assert!(reply.contains("\n\nhello worker "), "{reply}");
            }
            e if e.starts_with("curl") => {
                let status: Value = serde_json::from_str(&shell(&command)).expect("JSON");
                assert_eq!(status["rows"].as_array().map(Vec::len), Some(4), "{status}");
            }
            e if e.starts_with("wrk") => {
                let report = shell(&command);
                assert!(report.contains("Requests/sec:"), "{report}");
                assert!(!report.contains("Non-2xx"), "{report}");
                assert!(!report.contains("Socket errors"), "{report}");
            }
            _ => panic!("no check for the example `{example}` ({promise})"),
        }
    }
    let running = serving.expect("the server example ran");
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

/// `prefork client` with the example's arguments (`client --port P …`) and --json.
fn start_client_with(args: &[&str]) -> std::process::Child {
    Command::new(cargo_bin!("prefork"))
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts")
}

/// The sockets `pid` holds: (inode link, fdinfo flags), from /proc.
fn sockets_with_flags(pid: i32) -> Vec<(String, u32)> {
    let mut sockets = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("socket:") {
            continue;
        }
        let number = fd.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{number}"));
        let info = info.unwrap_or_default();
        let flags = info.lines().find_map(|line| line.strip_prefix("flags:"));
        let flags = flags.map_or(0, |f| u32::from_str_radix(f.trim(), 8).expect("octal"));
        sockets.push((target, flags));
    }
    sockets
}

/// A signal mask of /proc/<pid>/status (`SigIgn`, `SigBlk`, `SigCgt`) has `signal`.
fn mask_has(pid: i32, field: &str, signal: i32) -> bool {
    let mask = proc_status(pid, field).expect("a signal mask");
    u64::from_str_radix(&mask, 16).expect("hex") & (1 << (signal - 1)) != 0
}

#[test]
fn master_and_workers_share_one_listening_socket_and_the_workers_ignore_sigint_and_sighup() {
    // The chapter's "Listening before forking", "Signals across the fork", "The worker"
    // and "The scoreboard", from /proc.
    let (running, port) = server(&["--workers", "2"], 2);
    let master = running.pid();
    let listening = sockets_with_flags(master);
    assert_eq!(listening.len(), 1, "{listening:?}");
    let (socket, flags) = &listening[0];
    // One open file description: the same inode, the same flags (no O_NONBLOCK, which
    // would make the workers' accept() spin), in every worker.
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "{flags:o}");
    for worker in running.children() {
        assert_eq!(sockets_with_flags(worker), listening, "worker {worker}");
        assert!(mask_has(worker, "SigIgn", libc::SIGINT), "{worker}");
        assert!(mask_has(worker, "SigIgn", libc::SIGHUP), "{worker}");
        assert!(mask_has(worker, "SigCgt", libc::SIGTERM), "{worker}");
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            assert!(
                !mask_has(worker, "SigBlk", signal),
                "{worker}: unblocked after fork"
            );
        }
    }
    // The master: one thread, asleep in poll, mapping the scoreboard as its workers do.
    assert_eq!(proc_status(master, "Threads").as_deref(), Some("1"));
    let in_poll = eventually(Duration::from_secs(2), || {
        proc_wchan(master).is_some_and(|wchan| wchan.starts_with("poll_schedule_timeout"))
    });
    assert!(in_poll, "the master waits in {:?}", proc_wchan(master));
    let maps = std::fs::read_to_string(format!("/proc/{master}/maps")).expect("maps");
    assert!(
        maps.lines()
            .any(|l| l.contains("rw-s") && l.ends_with("/dev/zero (deleted)"))
    );
    // The backlog given to listen(), as ss shows it (Send-Q of a listening socket).
    let ss = shell(&format!("ss -Hltn 'sport = :{port}'"));
    if !ss.is_empty() {
        assert_eq!(ss.split_whitespace().nth(2), Some("128"), "{ss} ({socket})");
    }
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn a_passed_connection_is_a_new_descriptor_of_the_worker_that_the_master_no_longer_holds() {
    // Round-robin: the master's listening socket is non-blocking (its poll loop) and the
    // workers do not hold it; a connection passed by SCM_RIGHTS arrives as a descriptor
    // of the worker's own, close-on-exec, and the master has closed its copy.
    let (running, port) = server(&["--workers", "2", "--dispatch", "round-robin"], 2);
    let master = running.pid();
    let master_sockets = sockets_with_flags(master);
    assert_eq!(master_sockets.len(), 3, "listener + a channel per worker");
    let listener = master_sockets
        .iter()
        .find(|(_, flags)| flags & libc::O_NONBLOCK as u32 != 0)
        .expect("a non-blocking socket: the listening one");
    let workers = running.children();
    let mut channels = Vec::new();
    for &worker in &workers {
        let held = sockets_with_flags(worker);
        assert_eq!(held.len(), 1, "its channel only: {held:?}");
        channels.push(held[0].0.clone());
        // An idle worker waits in recvmsg() on its channel, not in accept().
        let in_recvmsg = eventually(Duration::from_secs(2), || {
            proc_wchan(worker).as_deref() == Some("__skb_wait_for_more_packets")
        });
        assert!(in_recvmsg, "{worker} waits in {:?}", proc_wchan(worker));
        assert!(
            !held.contains(listener),
            "{worker} holds the listening socket"
        );
    }
    let slow = ask_slowly(port, 1500, "held");
    wait_until_serving(&running, 1);
    let busy = workers
        .iter()
        .copied()
        .find(|&w| sockets_with_flags(w).len() == 2)
        .expect("a worker holding the connection");
    let master_now: Vec<String> = sockets_with_flags(master)
        .into_iter()
        .map(|s| s.0)
        .collect();
    let before: Vec<String> = master_sockets.into_iter().map(|s| s.0).collect();
    assert_eq!(master_now, before, "the master closed its copy");
    let passed: Vec<(String, u32)> = sockets_with_flags(busy)
        .into_iter()
        .filter(|(inode, _)| !before.contains(inode) && !channels.contains(inode))
        .collect();
    assert_eq!(passed.len(), 1, "{passed:?}");
    assert_ne!(passed[0].1 & libc::O_CLOEXEC as u32, 0, "MSG_CMSG_CLOEXEC");
    let (reply, _) = slow.join().expect("the request thread");
    assert!(reply.starts_with("held worker "), "{reply:?}");
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}

#[test]
fn a_quick_request_never_waits_behind_a_slow_one_in_shared_accept_and_least_loaded() {
    for mode in ["shared-accept", "least-loaded"] {
        let (running, port) = server(&["--workers", "2", "--dispatch", mode], 2);
        let slow = ask_slowly(port, 3000, "slow");
        wait_until_serving(&running, 1);
        let started = Instant::now();
        let slots: Vec<String> = (0..10)
            .map(|n| {
                let body = body_of(port, &format!("/echo/quick{n}"));
                body.split_whitespace().nth(2).expect("a slot").to_owned()
            })
            .collect();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{mode}: {took:?}");
        let (reply, _) = slow.join().expect("the slow request");
        let busy = reply.split_whitespace().nth(2).expect("a slot").to_owned();
        assert!(
            slots.iter().all(|s| *s != busy),
            "{mode}: {slots:?}, slow on {busy}"
        );
        running.terminate();
        let (status, events) = running.finish();
        assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
    }
}

#[test]
fn a_head_longer_than_8_kib_gets_no_reply_and_a_slow_request_beyond_a_minute_gets_400() {
    let (running, port) = server(&["--workers", "1"], 1);
    let long = format!("GET /echo/x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let reply = ask(port, &long).unwrap_or_default(); // closed, or reset
    assert_eq!(reply, "", "a head of 9 KiB");
    let short = format!("GET /echo/x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(7000));
    assert!(
        status_and_body(&ask(port, &short).expect("a reply"))
            .1
            .starts_with("x worker 0")
    );
    let reply = ask(port, &get("/slow/60001/x")).expect("a reply");
    assert_eq!(status_and_body(&reply).0, 400, "{reply}");
    running.terminate();
    let (status, events) = running.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &spawned_pids(&events));
}
