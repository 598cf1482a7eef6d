//! pipes — plumbing of the pipe programs (pipe, pipe_capacity, pipe_atomic, sigpipe,
//! pipe_bandwidth, pipe_deadlock, duplex).
//!
//! The programs write out pipe, socketpair, close, fork, write, read and fcntl themselves;
//! what is here only reads /proc, parses an option, waits for a moment worth narrating,
//! or words a summary (the `say_*` functions and the rows of pipe_bandwidth and duplex).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use nix::unistd::{Pid, getpid};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::inspect::{ProcView, fd_target, inspect, wchan};
use crate::narrate::event;
use crate::record::Tally;
use crate::{cli, measure};

/// What pipe's reading child reports to the parent, through a result pipe.
#[derive(Serialize, Deserialize)]
pub struct ReaderReport {
    pub tally: Tally,
    pub eof: bool,  // it saw EOF
    pub hang: bool, // it waited for EOF in vain until it closed its forgotten write end
}

impl ReaderReport {
    /// Narrates pipe's `summary`: the tally, `eof_seen`, `hang_detected` (only with
    /// --forget-close) and how the reader ended (`reader`).
    pub fn say_summary(&self, reader: &WaitStatus, forget_close: bool) {
        let (tally, eof_seen) = (self.tally, self.eof);
        let mut summary = event("summary").fields(tally).field("eof_seen", eof_seen);
        if forget_close {
            summary = summary.field("hang_detected", self.hang);
        }
        let (sent, got, once) = (tally.sent, tally.received, tally.exactly_once());
        let said =
            format!("summary: sent {sent}, received {got} (exactly once: {once}), EOF seen: ");
        summary
            .field("reader", crate::child::describe(reader))
            .say(said + &eof_seen.to_string());
    }
}

/// Says, as a `hang` event, from /proc/self/fd, that the write end keeping the pipe open
/// (no data and no EOF for `timeout`) is the reader's own, copied by fork.
///
/// # References: pipe(7) "I/O on pipes and FIFOs", proc(5) "/proc/pid/fd"
pub fn explain_the_hang(read_end: &OwnedFd, write_end: &OwnedFd, timeout: Duration) {
    let target = |fd: &OwnedFd| fd_target(getpid().as_raw(), fd.as_raw_fd()).unwrap_or_default();
    let (read_fd, write_fd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    let (read_target, write_target) = (target(read_end), target(write_end));
    event("hang")
        .field("timeout_s", timeout.as_secs_f64())
        .say(format!(
            "no data and no EOF for {timeout:?}: some write end is still open. /proc/self/fd: \
             {read_fd} -> {read_target}, {write_fd} -> {write_target} -- it is mine, copied by \
             fork and never closed"
        ));
}

/// `--timeout` of pipe: seconds, fractions allowed, from 0.1 to 60.
///
/// # References: poll(2) (the reader's wait)
pub fn hang_timeout(text: &str) -> Result<Duration, String> {
    match cli::seconds_up_to(60.0)(text) {
        Ok(timeout) if timeout >= Duration::from_millis(100) => Ok(timeout),
        Err(error) if text.trim().parse::<f64>().is_err() => Err(error), // not a number
        _ => Err(format!("{} is not between 0.1 and 60 seconds", text.trim())),
    }
}

/// Waits (5 s at most) until the pipe holds `capacity` bytes (ioctl FIONREAD) and the
/// writer sleeps in the kernel: state S, and a wchan (`0` would mean it is not blocked).
/// Returns the writer's /proc view and its wchan.
///
/// # References: ioctl_tty(2) "FIONREAD", proc_pid_wchan(5), proc_pid_stat(5)
pub fn asleep_on_the_full_pipe(
    writer: Pid,
    read_end: &OwnedFd,
    capacity: usize,
) -> anyhow::Result<(ProcView, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD stores one c_int, the bytes waiting in the pipe, in `queued`.
        unsafe { libc::ioctl(read_end.as_raw_fd(), libc::FIONREAD, &mut queued) };
        let (view, place) = (inspect(writer.as_raw())?, wchan(writer.as_raw()));
        let place = place.filter(|name| name != "0");
        if let (true, 'S', Some(place)) = (queued as usize == capacity, view.state, place) {
            return Ok((view, place));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "writer {writer} not asleep on the full pipe after 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The most an unprivileged process may ask of F_SETPIPE_SZ (1 MiB if unreadable).
///
/// # References: pipe(7) "/proc/sys/fs/pipe-max-size", fcntl(2) "F_SETPIPE_SZ"
pub fn pipe_max_size() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
    text.trim().parse().unwrap_or(1 << 20)
}

/// `--resize`: from 4096 bytes to /proc/sys/fs/pipe-max-size (going beyond it needs
/// CAP_SYS_RESOURCE: this demo does not ask).
///
/// # References: pipe(7) "/proc/sys/fs/pipe-max-size"
pub fn pipe_size(text: &str) -> Result<u64, String> {
    let max = pipe_max_size();
    match text.trim().parse::<u64>() {
        Ok(asked) if (4096..=max.min(1 << 30)).contains(&asked) => Ok(asked),
        Ok(asked) if asked > max => Err(format!("exceeds /proc/sys/fs/pipe-max-size ({max})")),
        _ => Err(format!("not a size from 4096 to {max} bytes")),
    }
}

/// pipe_deadlock's watchdog: polls /proc (state and wchan) until every side has slept in
/// a pipe write for `limit` in a row, and narrates `deadlock`; returns the kernel function
/// they sleep in, or None if they did not (a side died, 10 s more went by, or Ctrl-C came).
///
/// # References: proc_pid_stat(5), proc_pid_wchan(5), pipe(7)
pub fn watch_for_deadlock(
    sides: &[(&str, Pid)],
    limit: Duration,
) -> anyhow::Result<Option<String>> {
    let mut since: Option<Instant> = None;
    let deadline = Instant::now() + limit + Duration::from_secs(10);
    while Instant::now() < deadline && crate::signals::stop_requested().is_none() {
        let places: Vec<String> = sides
            .iter()
            .map(|(_, pid)| wchan(pid.as_raw()).unwrap_or_default())
            .collect();
        let states: Vec<char> = sides
            .iter()
            .map(|(_, pid)| inspect(pid.as_raw()).map_or('?', |view| view.state))
            .collect();
        if states.contains(&'Z') {
            return Ok(None); // a side died (killed): no deadlock left to watch
        }
        let all_asleep = states.iter().all(|&state| state == 'S')
            && places.iter().all(|place| place.contains("pipe_write"));
        match (all_asleep, since) {
            (false, _) => since = None,
            (true, None) => since = Some(Instant::now()),
            (true, Some(start)) if start.elapsed() >= limit => {
                let pids: Vec<String> = sides
                    .iter()
                    .map(|(name, pid)| format!("{name} {pid}"))
                    .collect();
                event("deadlock").field("wchan", &places[0]).say(format!(
                    "kernel says {} are both S (sleeping) in {} for {limit:?}: each waits for the other \
                     to read -- a deadlock. Killing both.",
                    pids.join(" and "),
                    places[0]
                ));
                return Ok(Some(places[0].clone()));
            }
            (true, Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// duplex's channel: two pipes, or one socketpair.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Transport {
    /// Two pipes: one for requests, one for responses.
    Pipes,
    /// One socketpair (AF_UNIX, SOCK_STREAM): both directions on one descriptor.
    Socketpair,
    /// Both, one after the other.
    Both,
}

impl Transport {
    /// The name the timeline gives it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Pipes => "two pipes",
            _ => "socketpair",
        }
    }
}

/// One side's ends in duplex: the descriptor it reads, and the one it writes if that is
/// another (with a socketpair, one descriptor does both).
pub struct Ends(pub OwnedFd, pub Option<OwnedFd>);

impl Ends {
    pub fn reads(&self) -> &OwnedFd {
        &self.0
    }

    pub fn writes(&self) -> &OwnedFd {
        self.1.as_ref().unwrap_or(&self.0)
    }
}

/// Narrates duplex's `method`: the round trips timed, the warm-up, the CPU both sides use.
pub fn say_duplex_method(rounds: u64, warm_up: u64, message: usize, cpu: usize) {
    event("method").field("cpu", cpu).say(format!(
        "method: {rounds} round trips of {message}-byte messages after {warm_up} warm-up ones; both sides pinned \
         to CPU {cpu}; median and p99"
    ));
}

/// Narrates duplex's `round_trip` for one transport, and returns it as the summary's row:
/// the responses `matched` out of `total`, the median and p99 of the timed round trips
/// (`micros`) and how the server ended.
pub fn round_trip_row(name: &str, total: u64, matched: u64, micros: &[f64], server: &str) -> Value {
    let (median, p99) = (measure::median(micros), measure::quantile(micros, 0.99));
    let row = json!({
        "transport": name, "requests": total, "matched": matched, "mismatched": total - matched,
        "round_trip_us": { "median": median, "p99": p99 },
    });
    event("round_trip").fields(&row).say(format!(
        "{name}: {matched}/{total} responses matched; round trip median {median:.1} µs, p99 {p99:.1} µs; server {server}"
    ));
    row
}

/// Narrates duplex's `summary`: the rows, and whether every response matched its request.
pub fn say_duplex_summary(rows: &[Value]) {
    let matched: u64 = rows.iter().filter_map(|row| row["matched"].as_u64()).sum();
    let requests: u64 = rows.iter().filter_map(|row| row["requests"].as_u64()).sum();
    event("summary")
        .field("transports", rows)
        .field("all_matched", matched == requests) // none mismatched, none lost
        .say(format!(
            "summary: {matched} responses, each matched to its request"
        ));
}

/// Narrates pipe_capacity's `summary`: the capacity found by filling, F_GETPIPE_SZ, the
/// capacity after F_SETPIPE_SZ, the limit, and how long the blocked writer slept.
pub fn say_capacity_summary(filled: usize, reported: i32, refilled: usize, max: u64, ms: f64) {
    event("summary")
        .field("capacity_bytes", filled)
        .field("f_getpipe_sz", reported)
        .field("resized_bytes", refilled)
        .field("pipe_max_size", max)
        .field("writer_blocked_ms", ms)
        .say(format!(
            "summary: capacity {filled} bytes, {refilled} after resizing; \
             a full pipe puts its writer to sleep"
        ));
}

/// Narrates pipe_bandwidth's `bandwidth` for one placement (the median MB/s of `samples`,
/// and their range) and returns the summary's row.
pub fn bandwidth_row(
    placement: &str,
    (writer_cpu, reader_cpu): (usize, usize),
    samples: &[f64],
) -> Value {
    let (median, low, high) = (
        measure::median(samples),
        measure::quantile(samples, 0.0),
        measure::quantile(samples, 1.0),
    );
    event("bandwidth")
        .field("placement", placement)
        .field("cpus", [writer_cpu, reader_cpu])
        .field("mb_per_s", median)
        .say(format!(
            "{placement:<9} (CPU {writer_cpu} -> CPU {reader_cpu}): {median:8.0} MB/s{}",
            if samples.len() > 1 {
                format!("  (range {low:.0}-{high:.0})")
            } else {
                String::new()
            }
        ));
    json!({ "placement": placement, "cpus": [writer_cpu, reader_cpu],
            "mb_per_s": median, "min": low, "max": high })
}
