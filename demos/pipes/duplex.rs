//! duplex — a conversation between two processes: two pipes, or one socketpair.
//!
//! Demonstrates: a pipe carries bytes one way, so request and response need two pipes —
//! or one socketpair, whose two ends each read and write. Every response is matched with
//! its request; a round trip costs two context switches when both sides share a CPU.
//! Run:     cargo run --bin duplex              (then --transport socketpair --rounds 100000)
//! Observe: every response matches its request; a round trip takes a few microseconds.
//! Book:    book/src/pipes/duplex.md

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, fork, getpid, pipe};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::pipes::{Ends, Transport};
use proclab::record::{Decoder, Found, Tag, encode};
use proclab::{child, cli, measure, narrate, pipes, signals};
use serde_json::Value;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// Makes the channel: the parent's ends and the child's ends.
// ANCHOR: channel
fn channel(transport: Transport) -> anyhow::Result<(Ends, Ends)> {
    if transport == Transport::Pipes {
        let (child_reads, parent_writes) = pipe().context("pipe")?; // requests
        let (parent_reads, child_writes) = pipe().context("pipe")?; // responses
        let parent = Ends(parent_reads, Some(parent_writes));
        return Ok((parent, Ends(child_reads, Some(child_writes))));
    }
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix, // a Unix-domain socket: both ends on this machine
        SockType::Stream,    // a stream of bytes, as in a pipe
        None,                // the only protocol there is for it
        SockFlag::empty(),   // blocking, and inherited across fork
    )
    .context("socketpair")?;
    Ok((Ends(parent_end, None), Ends(child_end, None))) // one descriptor, both ways
}
// ANCHOR_END: channel

fn run(args: &Args) -> anyhow::Result<()> {
    let (cpu, warm_up) = (measure::usable_cpus()[0], (args.rounds / 10).max(10));
    pipes::say_duplex_method(args.rounds, warm_up, MESSAGE, cpu);
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?; // the child inherits it
    let transports = match args.transport {
        Transport::Both => vec![Transport::Pipes, Transport::Socketpair],
        one => vec![one],
    };
    let mut rows = Vec::new();
    let not_stopped = |_: &Transport| signals::stop_requested().is_none();
    for transport in transports.into_iter().take_while(not_stopped) {
        rows.push(round_trips(transport, warm_up, args.rounds)?);
    }
    pipes::say_duplex_summary(&rows); // all matched?
    Ok(())
}

/// Forks a server and times `warm_up + rounds` request/response round trips with it.
fn round_trips(transport: Transport, warm_up: u64, rounds: u64) -> anyhow::Result<Value> {
    let name = transport.name();
    let (mine, theirs) = channel(transport)?;
    let parent = getpid();
    // SAFETY: single-threaded here, so the child may allocate; it answers requests until
    // EOF and calls _exit.
    let server = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            drop(mine); // keep only my ends, or EOF never comes
            serve(&theirs)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(theirs); // the parent keeps only its own ends
    let text = format!("{name}: fork() -> server {server}; sending requests");
    let forked = event("fork").field("child", server.as_raw());
    forked.field("transport", name).say(text);
    // ANCHOR: client
    let (mut matched, mut decoder) = (0u64, Decoder::default());
    let mut micros = Vec::with_capacity(rounds as usize);
    let mut response = [0u8; MESSAGE];
    let total = warm_up + rounds;
    for seq in 0..total {
        signals::bail_if_stopped()?;
        let start = Instant::now();
        write_all(mine.writes(), &encode(Tag { writer: 0, seq }, MESSAGE))?;
        if !read_exact(mine.reads(), &mut response)? {
            bail!("the server closed the channel after {seq} requests");
        }
        let elapsed = start.elapsed();
        let answer = decoder.feed(&response);
        // The answer to request `seq` is record `seq` from the server (writer 1).
        matched += u64::from(answer == [Found::Record(Tag { writer: 1, seq }, MESSAGE)]);
        if seq >= total - rounds {
            micros.push(elapsed.as_secs_f64() * 1e6); // after the warm-up: timed
        }
    }
    // ANCHOR_END: client
    drop(mine); // EOF for the server
    let server_ended = child::describe(&child::wait_or_kill(server)?);
    Ok(pipes::round_trip_row(
        name,
        total,
        matched,
        &micros,
        &server_ended,
    )) // narrated
}

/// The server: answers each request with a response of the same number, until EOF.
// ANCHOR: serve
fn serve(ends: &Ends) -> anyhow::Result<i32> {
    let (mut request, mut decoder) = ([0u8; MESSAGE], Decoder::default());
    while read_exact(ends.reads(), &mut request)? {
        let Some(Found::Record(Tag { seq, .. }, _)) = decoder.feed(&request).pop() else {
            bail!("a request arrived damaged");
        };
        write_all(ends.writes(), &encode(Tag { writer: 1, seq }, MESSAGE))?;
    }
    Ok(0) // EOF: the parent closed its end
}
// ANCHOR_END: serve

const MESSAGE: usize = 64; // bytes in a request, and in a response

/// Timed request and response over two pipes and a socketpair (both write first: pipe_deadlock).
#[derive(Parser)]
#[command(after_help = "Examples:\n  duplex\n  duplex --transport socketpair --rounds 100000")]
struct Args {
    /// Round trips per transport (1-1000000), after a warm-up of a tenth as many.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rounds: u64,

    /// Which channel to use.
    #[arg(long, value_enum, default_value_t = Transport::Both)]
    transport: Transport,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
