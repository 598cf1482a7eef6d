//! mqtt_workers/worker.rs — a worker: its own MQTT client, made after the fork; a job in,
//! a result out, a heartbeat every 100 ms.
//!
//! Demonstrates: a worker needs nothing of the master but the broker's address. It
//! subscribes to its route — the shared `$share/workers/sensors/+/data`, or `alerts/#`
//! alone — does each job, publishes the result tagged with the job's id, and only then
//! acknowledges the job (manual acks): a job is acknowledged once its effect exists.
//! Run:     cargo run -p mqtt_workers -- --freeze-worker-after 10
//! Observe: `ls -l /proc/<worker>/fd`: its own socket to the broker; `ps -L`: one thread.
//! Book:    book/src/patterns/mqtt_workers.md

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::unistd::getpid;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, RecvTimeoutError};
use serde_json::{Value, json};

/// How often a worker says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// How long one job takes.
const JOB_COST: Duration = Duration::from_millis(20);

/// What a worker subscribes to: one of the routes of RouteMQ's worker manager.
#[derive(Clone, Copy, PartialEq)]
pub enum Route {
    /// `sensors/+/data`, shared with the other members of the group `workers`.
    SharedSensors,
    /// `alerts/#`, an ordinary subscription: every alert comes to this worker.
    Alerts,
}

impl Route {
    /// The filter the worker subscribes to.
    pub fn filter(self) -> &'static str {
        match self {
            Route::SharedSensors => "$share/workers/sensors/+/data",
            Route::Alerts => "alerts/#",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Route::SharedSensors => "sensors/+/data",
            Route::Alerts => "alerts/#",
        }
    }
}

// ANCHOR: work
/// The worker's process, after the fork: connect, subscribe, then job → result → ack,
/// with a heartbeat every 100 ms; SIGTERM (kept pending by the blocked mask) ends it.
pub fn work(slot: usize, route: Route, broker: (String, u16)) -> anyhow::Result<i32> {
    let me = getpid();
    let mut options = MqttOptions::new(format!("worker-{slot}-{me}"), broker.0, broker.1);
    options.set_clean_session(true); // (a persistent session crashes rumqttd's router)
    options.set_manual_acks(true); // acknowledge a job once its result is published
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 256); // a current-thread runtime
    client.subscribe(route.filter(), QoS::AtLeastOnce)?;
    let heartbeat = json!({"slot": slot, "worker": me.as_raw()}).to_string();
    let mut subscribed = false;
    let mut last_beat = Instant::now();
    // The client hands over every message it read before it sends anything: queue the
    // jobs here, so that each result and ack goes out as soon as its job is done.
    let mut jobs = VecDeque::new();
    while !sigterm_pending() {
        if subscribed && last_beat.elapsed() >= HEARTBEAT_EVERY {
            client.try_publish(
                format!("heartbeat/{slot}"),
                QoS::AtMostOnce,
                false,
                &*heartbeat,
            )?;
            last_beat = Instant::now();
        }
        let wait = if jobs.is_empty() { 20 } else { 1 };
        match connection.recv_timeout(Duration::from_millis(wait)) {
            Err(RecvTimeoutError::Timeout) => {} // nothing more to read, nothing to send
            Err(RecvTimeoutError::Disconnected) => return Ok(0),
            Ok(Err(error)) => return Err(error).context("the worker's connection to the broker"),
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed = true; // the first heartbeat tells the master: ready
                client.try_publish(
                    format!("heartbeat/{slot}"),
                    QoS::AtMostOnce,
                    false,
                    &*heartbeat,
                )?;
                continue;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(job)))) => {
                jobs.push_back(job); // received, not acknowledged: the broker still owes it
                continue;
            }
            Ok(Ok(_)) => continue,
        }
        let Some(job) = jobs.pop_front() else {
            continue;
        };
        let id = serde_json::from_slice::<Value>(&job.payload)?["job"].as_u64();
        let id = id.context("a job's payload is {\"job\": ID}")?;
        std::thread::sleep(JOB_COST); // the job's work
        let result = json!({"job": id, "slot": slot, "worker": me.as_raw()}).to_string();
        client.try_publish(format!("results/{slot}"), QoS::AtLeastOnce, false, result)?;
        client.try_ack(&job)?; // only now may the broker forget the job
    }
    client.try_disconnect()?; // the master asked: leave the group cleanly
    let _ = connection.recv_timeout(Duration::from_millis(100));
    Ok(0)
}
// ANCHOR_END: work

/// True if the master's SIGTERM is pending: the worker keeps the stop signals blocked
/// (fork_worker blocked them across the fork), so a Ctrl-C never kills it mid-job.
fn sigterm_pending() -> bool {
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigpending(2) fills the set it is given; sigismember reads it.
    unsafe {
        libc::sigpending(pending.as_mut_ptr()) == 0
            && libc::sigismember(pending.as_ptr(), libc::SIGTERM) == 1
    }
}
