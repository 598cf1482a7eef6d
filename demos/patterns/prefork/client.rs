//! client — prefork's load generator: `prefork client`, and the client of --self-test.
//!
//! Demonstrates: what a client of a pre-forked server sees: C threads, each with one
//! connection at a time, send R requests in all, each with its own tag, and check that
//! each gets exactly one reply, its own — a worker killed mid-request costs a retry on a
//! new connection, never a wrong or a second reply.
//! Run:     cargo run --bin prefork -- client --port P     (P: the port a server printed)
//! Observe: `ok` equals `requests`; `mismatched` and `failed` stay 0 (else exit status 1).
//! Book:    book/src/patterns/prefork.md

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use proclab::cli;
use proclab::measure::quantile;
use proclab::narrate::{self, event};
use serde::{Deserialize, Serialize};

use crate::options::{ClientArgs, Load};

/// `prefork client`: sends the load, reports it as the run's summary, and exits 1 unless
/// every request got exactly one reply, its own.
pub fn main(client: &ClientArgs) -> ExitCode {
    narrate::init(client.json, "client");
    let report = run(&client.load, client.port, AccountAs::Summary);
    cli::exit_code(check(&report))
}

/// An error unless every request got exactly one reply, its own.
pub fn check(report: &Report) -> anyhow::Result<()> {
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
/// Sends the load to 127.0.0.1:`port` and reports it, as the run's `summary` or as a
/// `load_done` event.
pub fn run(load: &Load, port: u16, account_as: AccountAs) -> Report {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let connections = load.connections.min(load.requests); // no more threads than requests
    event("load")
        .field("connections", connections)
        .field("requests", load.requests)
        .say(format!(
            "{} requests to {address} from {connections} connections at a time",
            load.requests
        ));
    let started = Instant::now();
    let results_per_thread: Vec<ThreadResults> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|thread| {
                // Thread t sends requests t, t + C, t + 2C…: R in all.
                let count = (load.requests - thread).div_ceil(connections);
                scope.spawn(move || send_requests(address, load, thread, count))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a client thread does not panic"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let report = account(load, results_per_thread, seconds);
    let (name, label) = match account_as {
        AccountAs::Summary => ("summary", "summary"),
        AccountAs::LoadDone => ("load_done", "load done"),
    };
    let text = format!(
        "{label}: {} requests, {} ok, {} errors ({} refused), {} mismatched, {} failed; \
         {:.0} requests/s, latency p50 {:.3} ms, p99 {:.3} ms; replies per worker {:?}",
        report.requests,
        report.ok,
        report.errors,
        report.refused,
        report.mismatched,
        report.failed,
        report.rps,
        report.p50_ms,
        report.p99_ms,
        report.per_worker
    );
    event(name).fields(&report).say(text);
    report
}

/// One client thread: `count` requests, one connection each, tagged `<thread>-<n>`.
fn send_requests(address: SocketAddr, load: &Load, thread: u64, count: u64) -> ThreadResults {
    let mut results = ThreadResults::default();
    for n in 0..count {
        let tag = format!("{thread}-{n}");
        let request = if load.slow_ms > 0 && n % load.slow_every == 0 {
            format!("SLOW {} {tag}\n", load.slow_ms)
        } else {
            format!("ECHO {tag}\n")
        };
        let timeout = Duration::from_millis(load.slow_ms) + Duration::from_secs(10);
        let first_attempt = Instant::now();
        let mut attempts = 0;
        loop {
            match exchange(address, &request, timeout) {
                Ok(reply) => {
                    match worker_of(&reply, &tag) {
                        Some(slot) => {
                            results.ok += 1;
                            results
                                .latencies_ms
                                .push(first_attempt.elapsed().as_secs_f64() * 1e3);
                            if results.per_worker.len() <= slot {
                                results.per_worker.resize(slot + 1, 0);
                            }
                            results.per_worker[slot] += 1;
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
                    if attempts > load.retries {
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

/// One attempt: connect, send the request line, read until the server closes. A
/// connection that ends before a whole line came back is an error (to retry).
fn exchange(address: SocketAddr, request: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);
    if !reply.ends_with(b"\n") {
        read?; // (reset, timeout…)
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a whole reply",
        ));
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The worker slot named by `reply` if it is exactly one line answering `tag`:
/// `<tag> worker <slot> pid <pid>`.
fn worker_of(reply: &str, tag: &str) -> Option<usize> {
    let mut lines = reply.lines();
    let (line, extra) = (lines.next()?, lines.next());
    if extra.is_some() {
        return None; // two replies to one request
    }
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [answered, "worker", slot, "pid", _] if *answered == tag => slot.parse().ok(),
        _ => None,
    }
}

fn account(load: &Load, results_per_thread: Vec<ThreadResults>, seconds: f64) -> Report {
    let mut report = Report {
        requests: load.requests,
        seconds: (seconds * 1e6).round() / 1e6,
        ..Report::default()
    };
    let mut latencies = Vec::new();
    for results in results_per_thread {
        report.ok += results.ok;
        report.errors += results.errors;
        report.refused += results.refused;
        report.mismatched += results.mismatched;
        report.failed += results.failed;
        latencies.extend(results.latencies_ms);
        if report.per_worker.len() < results.per_worker.len() {
            report.per_worker.resize(results.per_worker.len(), 0);
        }
        for (slot, replies) in results.per_worker.into_iter().enumerate() {
            report.per_worker[slot] += replies;
        }
    }
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    report.rps = (report.ok as f64 / seconds).round();
    if !latencies.is_empty() {
        report.p50_ms = round(quantile(&latencies, 0.5));
        report.p99_ms = round(quantile(&latencies, 0.99));
    }
    report
}

/// Where the client's account goes: the run's summary (`prefork client`), or a
/// `load_done` event (--self-test: the server's summary comes last).
pub enum AccountAs {
    Summary,
    LoadDone,
}

/// The client's account: the JSON fields of its summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub requests: u64,
    /// Requests answered by exactly one reply carrying their tag.
    pub ok: u64,
    /// Failed attempts (each retried): refused, reset, closed without a reply.
    pub errors: u64,
    /// Of the errors, connections refused (ECONNREFUSED): nobody was listening.
    pub refused: u64,
    /// Replies with another request's tag, or more than one reply.
    pub mismatched: u64,
    /// Requests still unanswered after every retry.
    pub failed: u64,
    pub seconds: f64,
    /// Answered requests per second.
    pub rps: f64,
    /// Latency of answered requests, from the first attempt to the reply.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Replies per worker slot, as the replies named it.
    pub per_worker: Vec<u64>,
}

/// One thread's results.
#[derive(Default)]
struct ThreadResults {
    ok: u64,
    errors: u64,
    refused: u64,
    mismatched: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
    per_worker: Vec<u64>,
}
