//! A normal stop is quiet: SIGTERM to a demo in the middle of its work ends it, and its
//! children, without a single error line (issue 16 item 8). Used by the pipe and queue tests.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary at `path` with `--json` and `args`, waits for its first `event` line,
/// then `after` more, sends SIGTERM to the demo's own process (as `kill PID` does) and
/// returns how it ended and all it wrote on stderr.
pub fn sigterm_after(
    path: &Path,
    args: &[&str],
    event: &str,
    after: Duration,
) -> (ExitStatus, String) {
    let mut demo = Command::new(path)
        .arg("--json")
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let mut stderr = demo.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = BufReader::new(demo.stdout.take().expect("stdout is piped"));
    let wanted = format!("\"event\":\"{event}\"");
    let mut lines = stdout.lines().map_while(Result::ok);
    assert!(lines.any(|line| line.contains(&wanted)), "no {event} event");
    std::thread::spawn(move || lines.for_each(drop)); // keep reading: never a full pipe
    std::thread::sleep(after);
    // SAFETY: kill(2) with a pid this test started; no memory is involved.
    unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = demo.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no end within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    // SAFETY: as above; the group is the demo's, in case a child outlived it.
    unsafe { libc::kill(-(demo.id() as i32), libc::SIGKILL) };
    (status, errors.join().expect("stderr reader"))
}

/// Checks the quiet-stop contract: each of `delays_ms` after `event`, SIGTERM ends the demo
/// by SIGTERM (or it had just finished: exit 0), and nothing — parent or child — writes a
/// line on stderr. At least one of the delays must land in the middle.
pub fn assert_quiet_sigterm(path: &Path, args: &[&str], event: &str, delays_ms: &[u64]) {
    let mut stopped = 0;
    for &ms in delays_ms {
        let (status, stderr) = sigterm_after(path, args, event, Duration::from_millis(ms));
        let by_sigterm = status.signal() == Some(libc::SIGTERM);
        stopped += u32::from(by_sigterm);
        assert!(
            by_sigterm || status.success(),
            "{args:?} +{ms} ms: {status:?} {stderr}"
        );
        assert!(
            stderr.is_empty(),
            "{args:?}, SIGTERM {ms} ms after {event}: {stderr}"
        );
    }
    assert!(stopped > 0, "{args:?}: every run ended before the SIGTERM");
}
