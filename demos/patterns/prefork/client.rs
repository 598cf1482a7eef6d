//! client — prefork's load generator: `prefork client`, and the client of --self-test.
//!
//! Demonstrates: what a client of a pre-forked server sees: C threads, each with one
//! connection at a time, send R HTTP requests in all, each with its own tag, and check
//! that each gets exactly one reply, its own — a worker killed mid-request costs a retry
//! on a new connection, never a wrong or a second reply. No connection for 2 s: it stops.
//! Run:     cargo run --bin prefork -- client --port P     (P: the port a server printed)
//! Observe: `ok` equals `requests`; `mismatched` and `failed` stay 0 (else exit status 1).
//! Book:    book/src/patterns/prefork.md

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use proclab::cli;
use proclab::narrate::{self, event};
use proclab::queues::counted;

use crate::options::{ClientArgs, Load};
use crate::report::{self, Report, ThreadResults};
use crate::{http, idle};

/// `prefork client`: sends the load, reports it as the run's summary, and exits 1 unless
/// every request got exactly one reply, its own.
pub fn main(client: &ClientArgs) -> ExitCode {
    narrate::init(client.json, "client");
    let report = run(&client.load, client.port, AccountAs::Summary);
    cli::exit_code(check(&report))
}

/// An error unless every request got exactly one reply, its own.
pub fn check(report: &Report) -> anyhow::Result<()> {
    if report.gave_up {
        bail!(
            "no connection got through for {} s: gave up, {} of {} requests unanswered",
            GIVE_UP_AFTER.as_secs(),
            report.failed,
            report.requests
        );
    }
    if report.mismatched > 0 || report.failed > 0 {
        bail!(
            "{} of {} requests got a wrong reply and {} none at all",
            report.mismatched,
            report.requests,
            report.failed
        );
    }
    Ok(())
}

// ANCHOR: load
/// Sends the load to 127.0.0.1:`port` (and holds the idle connections, if any) and
/// reports it, as the run's `summary` or as a `load_done` event.
pub fn run(load: &Load, port: u16, account_as: AccountAs) -> Report {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let connections = load.connections.min(load.requests); // no more threads than requests
    event("load")
        .field("connections", connections)
        .field("requests", load.requests)
        .field("idle", load.idle)
        .say(format!(
            "{} to {address} from {} at a time{}",
            counted(load.requests, "request"),
            counted(connections, "connection"),
            match load.idle {
                0 => String::new(),
                idle => format!(", beside {}", counted(idle, "idle connection")),
            }
        ));
    let life = Life::new();
    let load_done = AtomicBool::new(false);
    let (results_per_thread, idle_dropped, seconds) = std::thread::scope(|scope| {
        let idle = idle::hold(scope, address, load.idle, &load_done); // first: they queue first
        let started = Instant::now();
        let threads: Vec<_> = (0..connections)
            .map(|thread| {
                // Thread t sends requests t, t + C, t + 2C…: R in all.
                let count = (load.requests - thread).div_ceil(connections);
                let life = &life;
                scope.spawn(move || send_requests(address, load, thread, count, life))
            })
            .collect();
        let results: Vec<ThreadResults> = threads
            .into_iter()
            .map(|thread| thread.join().expect("a client thread does not panic"))
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        load_done.store(true, Ordering::Relaxed); // the idle connections close now
        (results, idle::dropped(idle), seconds)
    });
    let mut report = report::account(load, results_per_thread, seconds);
    report.idle_dropped = idle_dropped;
    report.gave_up = life.gave_up.load(Ordering::Relaxed);
    let (name, label) = match account_as {
        AccountAs::Summary => ("summary", "summary"),
        AccountAs::LoadDone => ("load_done", "load done"),
    };
    event(name)
        .fields(&report)
        .say(format!("{label}: {}", report::text(&report)));
    report
}

/// One client thread: `count` requests, one connection each, tagged `<thread>-<n>`.
fn send_requests(
    address: SocketAddr,
    load: &Load,
    thread: u64,
    count: u64,
    life: &Life,
) -> ThreadResults {
    let mut results = ThreadResults::default();
    for n in 0..count {
        if life.gave_up.load(Ordering::Relaxed) {
            results.failed += count - n; // never sent: nobody is there to answer
            break;
        }
        let tag = format!("{thread}-{n}");
        let path = match load.slow_ms > 0 && n % load.slow_every == 0 {
            true => format!("/slow/{}/{tag}", load.slow_ms),
            false => format!("/echo/{tag}"),
        };
        // Long enough to wait behind idle connections that hold every worker.
        let timeout = Duration::from_millis(load.slow_ms) + Duration::from_secs(30);
        let first_attempt = Instant::now();
        let mut attempts = 0;
        loop {
            match exchange(address, &path, timeout, life) {
                Ok(reply) => {
                    match worker_of(&reply, &tag) {
                        Some(slot) => {
                            let latency_ms = first_attempt.elapsed().as_secs_f64() * 1e3;
                            results.answered(slot, latency_ms);
                        }
                        None => results.mismatched += 1,
                    }
                    break;
                }
                Err(error) => {
                    results.errors += 1;
                    results.refused +=
                        u64::from(error.kind() == std::io::ErrorKind::ConnectionRefused);
                    attempts += 1;
                    if attempts > load.retries || life.silent_too_long() {
                        results.failed += 1;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    results
}
// ANCHOR_END: load

/// One attempt: connect, send the request, read until the server closes. A connection
/// that ends before a whole reply came back is an error (to retry).
fn exchange(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
    life: &Life,
) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    life.sign(); // somebody is listening
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(http::request(path).as_bytes())?;
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);
    life.sign(); // and somebody answered, or closed
    if http::parse_reply(&reply).is_none() {
        read?; // (reset, timeout…)
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a whole reply",
        ));
    }
    Ok(reply)
}

/// The worker slot named by `reply` if it is `200 OK` with exactly one line answering
/// `tag`: `<tag> worker <slot> pid <pid>`.
fn worker_of(reply: &[u8], tag: &str) -> Option<usize> {
    let (200, body) = http::parse_reply(reply)? else {
        return None;
    };
    let mut lines = body.lines();
    let (line, extra) = (lines.next()?, lines.next());
    if extra.is_some() {
        return None; // two replies to one request
    }
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [answered, "worker", slot, "pid", _] if *answered == tag => slot.parse().ok(),
        _ => None,
    }
}

/// The client's overall deadline: once no connection has been accepted or answered for
/// GIVE_UP_AFTER and a request fails, the server is gone, and the client reports.
struct Life {
    started: Instant,
    /// When a connection last got through: ms since `started`.
    last_sign_ms: AtomicU64,
    gave_up: AtomicBool,
}

impl Life {
    fn new() -> Life {
        let (last_sign_ms, gave_up) = (AtomicU64::new(0), AtomicBool::new(false));
        Life {
            started: Instant::now(),
            last_sign_ms,
            gave_up,
        }
    }

    fn sign(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_sign_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// True (and from now on, for every thread) once nobody answered for GIVE_UP_AFTER.
    fn silent_too_long(&self) -> bool {
        let last = Duration::from_millis(self.last_sign_ms.load(Ordering::Relaxed));
        if self.started.elapsed().saturating_sub(last) > GIVE_UP_AFTER {
            self.gave_up.store(true, Ordering::Relaxed);
        }
        self.gave_up.load(Ordering::Relaxed)
    }
}

/// How long the client keeps trying while no connection gets through.
const GIVE_UP_AFTER: Duration = Duration::from_secs(2);

/// Where the client's account goes: the run's summary (`prefork client`), or a
/// `load_done` event (--self-test: the server's summary comes last).
pub enum AccountAs {
    Summary,
    LoadDone,
}
