//! Helpers shared by the integration tests: run a demo with a time limit, read its JSON
//! timeline, and look at `/proc` for a pid — parsed here from the raw files, so that the
//! tests do not trust the library the demos use to read them.
//!
//! Tests never fork: the test harness is multithreaded. They run the demo binaries.

#![allow(dead_code)] // each test file uses its own part of these helpers

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// No demo run in a test may take longer than this.
pub const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Runs a demo to completion (killed after [`TIME_LIMIT`]) and returns its assert handle.
pub fn run(mut demo: assert_cmd::Command, args: &[&str]) -> assert_cmd::assert::Assert {
    demo.args(args).timeout(TIME_LIMIT).assert()
}

/// Runs a demo with `--json` and returns its events, checked to be JSON Lines in the
/// project's format and to end with a summary.
pub fn run_json(demo: assert_cmd::Command, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = run(demo, &all).success().get_output().clone();
    events(&output.stdout)
}

/// Parses a `--json` timeline: every line an object with `t`, `pid`, `role`, `event`, and
/// the last one the summary.
pub fn events(stdout: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stdout).expect("the timeline is UTF-8");
    let events: Vec<Value> = text.lines().map(parse_event).collect();
    let last = events.last().expect("the timeline has at least one event");
    assert_eq!(
        last["event"], "summary",
        "the last event is the summary: {text}"
    );
    events
}

/// Runs a demo with `--json` that must fail at runtime: exit status 1 with `message` on
/// stderr. Returns its events (the project's format, but no summary at the end).
pub fn run_json_failing(demo: assert_cmd::Command, args: &[&str], message: &str) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = run(demo, &all)
        .code(1)
        .stderr(predicates::str::contains(message))
        .get_output()
        .clone();
    let text = std::str::from_utf8(&output.stdout).expect("the timeline is UTF-8");
    text.lines().map(parse_event).collect()
}

/// Sends `signal` to `pid` (a negative pid: to that process group), as kill(1) does.
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes two numbers; no memory is involved.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal})");
}

fn parse_event(line: &str) -> Value {
    let event: Value = serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
    assert!(
        event["t"].is_f64() || event["t"].is_u64(),
        "t is a number: {line}"
    );
    assert!(event["pid"].is_u64(), "pid is a number: {line}");
    assert!(event["role"].is_string(), "role is a string: {line}");
    assert!(event["event"].is_string(), "event is a string: {line}");
    assert!(event["text"].is_string(), "text is a string: {line}");
    event
}

/// The first event called `name`.
pub fn find<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|event| event["event"] == name)
        .unwrap_or_else(|| panic!("no {name:?} event in {events:#?}"))
}

/// The summary (the last event).
pub fn summary(events: &[Value]) -> &Value {
    events.last().expect("events end with a summary")
}

/// A JSON number as a pid.
pub fn pid_of(value: &Value) -> i32 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{value} is not a pid")) as i32
}

/// The state letter in `/proc/<pid>/stat` (R, S, Z…), or None if there is no such
/// process. The command name in parentheses may hold spaces, so read after the last `)`.
pub fn proc_state(pid: i32) -> Option<char> {
    proc_stat_field(pid, 3)?.chars().next()
}

/// Field `number` of `/proc/<pid>/stat`, numbered as proc_pid_stat(5) numbers them (3 is
/// the state, 6 the session, 19 the nice value), or None.
pub fn proc_stat_field(pid: i32, number: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let field = after_comm.split_whitespace().nth(number.checked_sub(3)?)?;
    Some(field.to_owned())
}

/// A field of `/proc/<pid>/status` (`PPid`, `Name`, `SigBlk`…), or None.
pub fn proc_status(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().to_owned())
    })
}

/// `/proc/<pid>/wchan`, the kernel function the process sleeps in, or None.
pub fn proc_wchan(pid: i32) -> Option<String> {
    let place = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    Some(place.trim().to_owned())
}

/// `/proc/<pid>/comm`, the command name, or None.
pub fn proc_comm(pid: i32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// True if `pid` exists and is not a zombie: it could still run.
pub fn running(pid: i32) -> bool {
    matches!(proc_state(pid), Some(state) if state != 'Z' && state != 'X')
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A demo running in the background with `--json`, read event by event as it prints.
/// Dropping it kills the demo if it is still running.
pub struct Running {
    process: Child,
    lines: Receiver<String>,
    seen: Vec<Value>,
}

impl Running {
    /// Starts the binary at `path` (from `assert_cmd::cargo::cargo_bin!`) with `--json`,
    /// in a process group of its own, as a shell starts a job: [`Running::interrupt`]
    /// then acts like Ctrl-C.
    pub fn start(path: &Path, args: &[&str]) -> Running {
        Running::start_command(Command::new(path), args)
    }

    /// [`Running::start`] from a prepared `Command` (limits set in its `pre_exec`, another
    /// user …).
    pub fn start_command(mut command: Command, args: &[&str]) -> Running {
        let mut process = command
            .arg("--json")
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the demo starts");
        let stdout = process.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            process,
            lines,
            seen: Vec::new(),
        }
    }

    /// The demo's own pid.
    pub fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Waits for the first event called `name` (it may have come already).
    pub fn wait_for(&mut self, name: &str) -> Value {
        self.wait_for_where(name, |_| true)
    }

    /// Waits for the first event called `name` for which `test` holds.
    pub fn wait_for_where(&mut self, name: &str, test: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIME_LIMIT;
        loop {
            if let Some(event) = self
                .seen
                .iter()
                .find(|event| event["event"] == name && test(event))
            {
                return event.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(parse_event(&line)),
                Err(_) => panic!("no {name:?} event within {TIME_LIMIT:?}: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the demo to exit; returns its status and all its events.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + TIME_LIMIT;
        let status = loop {
            if let Some(status) = self.process.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not end within {TIME_LIMIT:?}; its events so far: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // Read to EOF: it comes once no process of the demo holds its stdout any more.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(parse_event(&line)),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout still open after exit"),
            }
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// The demo's children now, from `/proc/<pid>/task/<pid>/children` (the kernel's
    /// list, not the demo's word).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    /// Waits (10 s at most) until the demo has at least one child; returns them all.
    pub fn wait_for_children(&self) -> Vec<i32> {
        let mut children = Vec::new();
        let found = eventually(Duration::from_secs(10), || {
            children = self.children();
            !children.is_empty()
        });
        assert!(found, "the demo forked no child within 10 s");
        children
    }

    /// Ctrl-C: SIGINT to the demo's whole process group, children included.
    pub fn interrupt(&self) {
        send_signal(-self.pid(), libc::SIGINT);
    }

    /// SIGTERM to the demo's own process only, as `kill PID` sends it: its children get
    /// nothing, so the demo itself must end them.
    pub fn terminate(&self) {
        send_signal(self.pid(), libc::SIGTERM);
    }

    /// Sends SIGKILL to the demo's own process (not to its children) and reaps it.
    pub fn kill(mut self) -> ExitStatus {
        self.process.kill().expect("kill the demo");
        self.process.wait().expect("reap the demo")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs the binary at `path` with its stdout closed after the first line (like
/// `demo | head -1`); returns its exit status and stderr.
pub fn run_into_closed_pipe(path: &Path, args: &[&str]) -> (ExitStatus, String) {
    let mut process = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let mut stdout = BufReader::new(process.stdout.take().expect("stdout is piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    drop(stdout); // the reader goes away, as `head -1` does
    let stderr = process.stderr.take().expect("stderr is piped");
    let output = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = process.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = process.kill();
            panic!("the demo did not end within {TIME_LIMIT:?} after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, output.join().expect("stderr reader"))
}

/// Checks the closed-pipe contract for each argument list: the demo ends normally, with
/// no panic on stderr, when its stdout is closed after the first line.
pub fn assert_quiet_into_closed_pipe(path: &Path, arg_lists: &[&[&str]]) {
    for args in arg_lists {
        let (status, stderr) = run_into_closed_pipe(path, args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("Broken pipe"),
            "{args:?}: nobody may complain: {stderr}"
        );
        assert!(status.success(), "{args:?}: {status:?} {stderr}");
    }
}

/// Checks the usage-error contract: exit status 2, exactly one line on stderr, no panic.
pub fn assert_usage_error(demo: assert_cmd::Command, args: &[&str]) {
    let output = run(demo, args).code(2).get_output().clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr for {args:?}: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Checks the Ctrl-C contract: the demo died by SIGINT (as the shell must see it), after
/// reaping every process it made: none of `pids` is left, not even as a zombie.
pub fn assert_interrupted_cleanly(status: ExitStatus, pids: &[i32]) {
    assert_stopped_cleanly(status, libc::SIGINT, pids);
}

/// Like [`assert_interrupted_cleanly`], for any stop signal (SIGINT, SIGTERM).
pub fn assert_stopped_cleanly(status: ExitStatus, signal: i32, pids: &[i32]) {
    assert_eq!(
        status.signal(),
        Some(signal),
        "the demo dies by signal {signal}: {status:?}"
    );
    for &pid in pids {
        // At once: the demo reaped it before dying (init would take a while, and a
        // container's PID 1 might never do it).
        assert_eq!(proc_state(pid), None, "{pid} is left behind");
    }
}

/// The pids listed in a JSON array field.
pub fn pids_in(value: &Value) -> Vec<i32> {
    value
        .as_array()
        .expect("a list of pids")
        .iter()
        .map(pid_of)
        .collect()
}

/// The pids of every `spawn` event (its `worker` field), in order.
pub fn spawned_pids(events: &[Value]) -> Vec<i32> {
    events
        .iter()
        .filter(|event| event["event"] == "spawn")
        .map(|event| pid_of(&event["worker"]))
        .collect()
}

/// A scratch directory for one test, removed when dropped — even when the test fails.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// Creates `$TMPDIR/proclab-test-<name>-<pid>`.
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("proclab-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The children of `pid` now, from `/proc/<pid>/task/<pid>/children` (the kernel's list).
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

/// Runs `command` in a process group of its own and returns its stdout, or `None` if it has
/// not finished within `limit` (then the whole group is killed). A grandchild that keeps
/// stdout open after its parent ended is killed with the group too.
pub fn output_within(mut command: Command, limit: Duration) -> Option<Vec<u8>> {
    let mut child = command
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut output);
        let _ = sender.send(output);
    });
    let group = -(child.id() as i32);
    let output = received.recv_timeout(limit).ok();
    // SAFETY: kill(2) takes two numbers; the group is the command's own.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = child.wait();
    output
}

/// Runs `path --json` on a terminal: script(1) starts it on a pty of its own, as the
/// leader of a session with that pty as its controlling terminal. None, and the test is
/// skipped, without script (util-linux).
pub fn run_on_a_terminal(path: &Path) -> Option<Vec<Value>> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1) to give the program a terminal");
        return None;
    }
    let mut script = Command::new("script");
    let command = format!("{} --json", path.display());
    script
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null());
    let output = output_within(script, Duration::from_secs(20)).expect("ends within 20 s");
    let text = String::from_utf8_lossy(&output).replace('\r', ""); // the pty's CR LF
    Some(events(text.as_bytes()))
}

/// Every file under `dir` whose name ends in `.<extension>`, sorted.
pub fn files_ending(dir: &std::path::Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(files_ending(&path, extension));
        } else if path.extension().is_some_and(|ext| ext == extension) {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every markdown file under `dir` (book/src), sorted.
pub fn markdown_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_ending(dir, "md")
}

/// Every process in `/proc` now.
pub fn pids() -> Vec<i32> {
    let entries = std::fs::read_dir("/proc").expect("/proc");
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}
