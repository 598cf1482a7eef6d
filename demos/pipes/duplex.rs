//! duplex — two-way talk between processes: two pipes, or one socketpair.
//!
//! Demonstrates: a pipe goes one way, so a conversation needs two (one per direction) —
//! or a socketpair, one bidirectional channel. Each request is matched with its response
//! and the round trip is timed. And the classic trap: if both sides write more than a
//! pipe holds before reading, both sleep for ever in write().
//! Run:     cargo run --bin duplex             (then --deadlock)
//! Observe: every response matches its request; with --deadlock, /proc shows both sides
//!          asleep in pipe_write until the watchdog ends them.
//! Book:    book/src/pipes/duplex.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe};
use proclab::fdio::{read_exact, write_all};
use proclab::inspect::{inspect, wchan};
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Tag, encode};
use proclab::{child, cli, measure, narrate, signals};
use serde_json::json;

/// Request and response between parent and child, over two pipes and over a socketpair.
///
/// The parent sends numbered requests, the child answers each; the parent matches every
/// response to its request and times the round trip (both processes pinned to one CPU;
/// median and p99 after a warm-up). --deadlock makes both sides write more than a pipe
/// holds before reading: a watchdog sees both asleep in write() and ends them.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  duplex\n  duplex --transport socketpair --rounds 100000\n  duplex --deadlock"
)]
struct Args {
    /// Round trips per transport (1-1000000), after a warm-up of a tenth as many.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rounds: u64,

    /// Which channel to use.
    #[arg(long, value_enum, default_value_t = Transport::Both)]
    transport: Transport,

    /// Both sides write a message larger than the pipe before reading: a deadlock.
    #[arg(long)]
    deadlock: bool,

    /// With --deadlock: the size of each side's message (65537-16777216 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 262_144, requires = "deadlock",
          value_parser = clap::value_parser!(u64).range(65_537..=16_777_216))]
    message: u64,

    /// With --deadlock: how long both must sleep in write() to call it a deadlock (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = cli::seconds,
          requires = "deadlock")]
    watchdog: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Transport {
    /// Two pipes: one for requests, one for responses.
    Pipes,
    /// One socketpair (AF_UNIX, SOCK_STREAM): both directions on one descriptor.
    Socketpair,
    /// Both, one after the other.
    Both,
}

/// The size of a request and of a response.
const MESSAGE: usize = 64;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.watchdog > Duration::from_secs(60) {
        cli::usage_error("--watchdog is at most 60 seconds");
    }
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| {
        if args.deadlock {
            deadlock(args.message as usize, args.watchdog)
        } else {
            talk(&args)
        }
    })
}

/// One side's ends: where it reads, where it writes. With a socketpair both are the same
/// descriptor.
struct Ends {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Ends {
    fn write_end(&self) -> &OwnedFd {
        self.write.as_ref().unwrap_or(&self.read)
    }
}

/// Makes the channel: the parent's ends and the child's ends.
// ANCHOR: channel
fn channel(transport: Transport) -> anyhow::Result<(Ends, Ends)> {
    Ok(match transport {
        Transport::Pipes => {
            let (child_reads, parent_writes) = pipe().context("pipe")?; // requests
            let (parent_reads, child_writes) = pipe().context("pipe")?; // responses
            let parent = Ends {
                read: parent_reads,
                write: Some(parent_writes),
            };
            (
                parent,
                Ends {
                    read: child_reads,
                    write: Some(child_writes),
                },
            )
        }
        _ => {
            let (parent_end, child_end) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::empty(),
            )
            .context("socketpair")?;
            (
                Ends {
                    read: parent_end,
                    write: None,
                },
                Ends {
                    read: child_end,
                    write: None,
                },
            )
        }
    })
}
// ANCHOR_END: channel

fn talk(args: &Args) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    let transports = match args.transport {
        Transport::Both => vec![Transport::Pipes, Transport::Socketpair],
        one => vec![one],
    };
    let cpu = measure::usable_cpus()[0];
    event("method").field("cpu", cpu).say(format!(
        "method: {} round trips of {MESSAGE}-byte messages after {} warm-up ones; both sides pinned \
         to CPU {cpu}; median and p99",
        args.rounds,
        warm_up(args.rounds)
    ));
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?; // the child inherits it
    let mut rows = Vec::new();
    for transport in transports {
        rows.push(round_trips(transport, args.rounds)?);
        if signals::stop_requested().is_some() {
            break;
        }
    }
    let matched: u64 = rows
        .iter()
        .map(|row| row["matched"].as_u64().unwrap_or(0))
        .sum();
    event("summary")
        .field("transports", &rows)
        .field(
            "all_matched",
            rows.iter()
                .all(|row| row["mismatched"] == 0 && row["matched"] == row["requests"]),
        )
        .say(format!(
            "summary: {matched} responses, each matched to its request"
        ));
    Ok(())
}

fn warm_up(rounds: u64) -> u64 {
    (rounds / 10).max(10)
}

fn round_trips(transport: Transport, rounds: u64) -> anyhow::Result<serde_json::Value> {
    let name = if transport == Transport::Pipes {
        "two pipes"
    } else {
        "socketpair"
    };
    let (mine, theirs) = channel(transport)?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child serves and calls _exit.
    let server = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            drop(mine); // keep only my ends, or EOF never comes
            serve(&theirs)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    event("fork")
        .field("child", server.as_raw())
        .field("transport", name)
        .say(format!(
            "{name}: fork() -> server {server}; sending requests"
        ));
    // ANCHOR: client
    let (mut matched, mut mismatched, mut decoder) = (0u64, 0u64, Decoder::default());
    let mut micros = Vec::with_capacity(rounds as usize);
    let mut response = [0u8; MESSAGE];
    let total = warm_up(rounds) + rounds;
    for seq in 0..total {
        signals::bail_if_stopped()?;
        let start = Instant::now();
        write_all(mine.write_end(), &encode(Tag { writer: 0, seq }, MESSAGE))?;
        if !read_exact(&mine.read, &mut response)? {
            bail!("the server closed the channel after {seq} requests");
        }
        let elapsed = start.elapsed();
        match decoder.feed(&response).as_slice() {
            [
                Found::Record(
                    Tag {
                        writer: 1,
                        seq: answered,
                    },
                    _,
                ),
            ] if *answered == seq => matched += 1,
            _ => mismatched += 1,
        }
        if seq >= total - rounds {
            micros.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    // ANCHOR_END: client
    drop(mine); // EOF for the server
    let status = child::wait_or_kill(server)?;
    let (median, p99) = (measure::median(&micros), measure::quantile(&micros, 0.99));
    event("round_trip")
        .field("transport", name)
        .field("matched", matched)
        .field("round_trip_us", json!({ "median": median, "p99": p99 }))
        .say(format!(
            "{name}: {matched}/{total} responses matched; round trip median {median:.1} µs, p99 {p99:.1} µs; server {}",
            child::describe(&status)
        ));
    Ok(json!({
        "transport": name, "requests": total, "matched": matched, "mismatched": mismatched,
        "round_trip_us": { "median": median, "p99": p99 },
    }))
}

/// The server: answer each request with a response that carries the same number, until
/// EOF.
// ANCHOR: serve
fn serve(ends: &Ends) -> anyhow::Result<i32> {
    let mut request = [0u8; MESSAGE];
    let mut decoder = Decoder::default();
    while read_exact(&ends.read, &mut request)? {
        let Some(Found::Record(Tag { seq, .. }, _)) = decoder.feed(&request).pop() else {
            bail!("a request arrived damaged");
        };
        write_all(ends.write_end(), &encode(Tag { writer: 1, seq }, MESSAGE))?;
    }
    Ok(0)
}
// ANCHOR_END: serve

/// `--deadlock`: two processes, two pipes; each writes `size` bytes to the other before
/// reading anything. The demo watches them from outside.
fn deadlock(size: usize, watchdog: Duration) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    let (left_ends, right_ends) = channel(Transport::Pipes)?;
    let demo = getpid();
    // SAFETY: single-threaded here; the child writes, reads and calls _exit.
    let left = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(demo, || {
            drop(right_ends); // only my own ends
            write_then_read("left", "right", &left_ends, size)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(left_ends);
    // SAFETY: as above.
    let right = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            child::run_then_exit(demo, || write_then_read("right", "left", &right_ends, size))
        }
        ForkResult::Parent { child } => child,
    };
    drop(right_ends);
    let sides = [("left", left), ("right", right)];
    event("watch").say(format!(
        "watchdog: are both asleep in write() for {watchdog:?}?"
    ));
    let asleep = watch(&sides, watchdog)?;
    for &(_, pid) in &sides {
        let _ = kill(pid, Signal::SIGKILL);
    }
    for &(name, pid) in &sides {
        let status = child::wait_or_kill(pid)?;
        event("reap")
            .field("child", pid.as_raw())
            .fields(child::ending(&status))
            .say(format!("the {name} side: {}", child::describe(&status)));
    }
    event("summary")
        .field("deadlock_detected", asleep.is_some())
        .field("wchan", asleep.clone().unwrap_or_default())
        .field("message_bytes", size)
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(if asleep.is_some() {
            "summary: each side waited for the other to read: a deadlock. Avoid it with poll() and \
             non-blocking writes, a thread (or process) per direction, or a protocol that never has \
             both sides writing more than the pipe holds"
        } else {
            "summary: no deadlock was confirmed (interrupted, or a side got past its write)"
        });
    Ok(())
}

/// One side of `--deadlock`: write the whole message, then read the other's.
// ANCHOR: deadlock
fn write_then_read(me: &'static str, other: &str, ends: &Ends, size: usize) -> anyhow::Result<i32> {
    narrate::set_role(me);
    event("write").say(format!("writing {size} bytes to {other}, then I will read"));
    write_all(ends.write_end(), &vec![b'x'; size])?; // blocks once the pipe is full
    event("read").say("my write is done; reading"); // never reached
    read_exact(&ends.read, &mut vec![0u8; size])?;
    Ok(0)
}
// ANCHOR_END: deadlock

/// Polls /proc until every side has slept in a pipe write for `limit` in a row; returns
/// the kernel function they sleep in, or None if they did not (or Ctrl-C came).
// ANCHOR: watch
fn watch(sides: &[(&str, Pid)], limit: Duration) -> anyhow::Result<Option<String>> {
    let mut since: Option<Instant> = None;
    let deadline = Instant::now() + limit + Duration::from_secs(10);
    while Instant::now() < deadline && signals::stop_requested().is_none() {
        let places: Vec<String> = sides
            .iter()
            .map(|(_, pid)| wchan(pid.as_raw()).unwrap_or_default())
            .collect();
        let states: Vec<char> = sides
            .iter()
            .map(|(_, pid)| inspect(pid.as_raw()).map_or('?', |v| v.state))
            .collect();
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
// ANCHOR_END: watch
