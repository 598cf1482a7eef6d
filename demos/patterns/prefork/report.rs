//! report — prefork client's account: what every request got, in numbers.
//!
//! Demonstrates: nothing of the kernel; how the load client counts: a reply is `ok` only
//! if it is exactly one reply carrying its own request's tag; everything else is an
//! error (retried), a mismatch or a failure — and requests/s and latency come from runs.
//! Run:     cargo run --bin prefork -- --self-test --json | tail -1
//! Observe: `client.ok` equals `client.requests`; `mismatched` and `failed` are 0.
//! Book:    book/src/patterns/prefork.md

use proclab::measure::quantile;
use proclab::queues::counted;
use serde::{Deserialize, Serialize};

use crate::options::Load;

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
    /// Requests still unanswered after every retry, or never sent once the client gave up.
    pub failed: u64,
    pub seconds: f64,
    /// Answered requests per second (one decimal below 10).
    pub rps: f64,
    /// Latency of answered requests, from the first attempt to the reply.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Replies per worker slot, as the replies named it.
    pub per_worker: Vec<u64>,
    /// --idle: how many times the server dropped an idle connection (each was reopened).
    #[serde(default)]
    pub idle_dropped: u64,
    /// No connection got through for 2 s: the client stopped and reported.
    #[serde(default)]
    pub gave_up: bool,
}

/// One thread's results.
#[derive(Default)]
pub struct ThreadResults {
    pub ok: u64,
    pub errors: u64,
    pub refused: u64,
    pub mismatched: u64,
    pub failed: u64,
    latencies_ms: Vec<f64>,
    per_worker: Vec<u64>,
}

impl ThreadResults {
    /// A request got its own reply, from the worker in `slot`, after `latency_ms`.
    pub fn answered(&mut self, slot: usize, latency_ms: f64) {
        self.ok += 1;
        self.latencies_ms.push(latency_ms);
        if self.per_worker.len() <= slot {
            self.per_worker.resize(slot + 1, 0);
        }
        self.per_worker[slot] += 1;
    }
}

// ANCHOR: account
/// Adds up the threads' results.
pub fn account(load: &Load, results_per_thread: Vec<ThreadResults>, seconds: f64) -> Report {
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
    let rate = report.ok as f64 / seconds;
    report.rps = if rate < 10.0 {
        (rate * 10.0).round() / 10.0
    } else {
        rate.round()
    };
    if !latencies.is_empty() {
        report.p50_ms = round(quantile(&latencies, 0.5));
        report.p99_ms = round(quantile(&latencies, 0.99));
    }
    report
}
// ANCHOR_END: account

/// The account in one sentence, for the timeline.
pub fn text(report: &Report) -> String {
    let mut text = format!(
        "{}, {} ok, {} ({} refused), {} mismatched, {} failed in {:.3} s; {}; \
         replies per worker {:?}",
        counted(report.requests, "request"),
        report.ok,
        counted(report.errors, "error"),
        report.refused,
        report.mismatched,
        report.failed,
        report.seconds,
        speed(report, "latency "),
        report.per_worker
    );
    if report.idle_dropped > 0 {
        text += &format!(
            "; the server dropped idle connections {}",
            counted(report.idle_dropped, "time")
        );
    }
    if report.gave_up {
        text += "; no connection got through for 2 s: gave up";
    }
    text
}

/// Requests/s and the latency quantiles (after `latency`: "latency " or ""), or, when no
/// request was answered, that none was: no statistics of nothing. Below 10/s the rate has
/// a decimal (1 request in 4.9 s is 0.2/s, not 0).
pub fn speed(report: &Report, latency: &str) -> String {
    if report.ok == 0 {
        return "no request was answered".to_owned();
    }
    let decimals = if report.rps < 10.0 { 1 } else { 0 };
    format!(
        "{:.decimals$} requests/s, {latency}p50 {:.3} ms, p99 {:.3} ms",
        report.rps, report.p50_ms, report.p99_ms
    )
}
