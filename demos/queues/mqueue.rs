//! mqueue — producers and consumers around one POSIX message queue: every message once.
//!
//! Demonstrates: a message queue hands each message, whole, to exactly one of the
//! processes receiving from it, so several consumers share one queue without a lock; its
//! name can go (mq_unlink) as soon as every process has the queue open.
//! Run:     cargo run --bin mqueue            (add --consumers 3 --messages 10000)
//! Observe: every message received exactly once, in order per producer; the queue empty.
//! Book:    book/src/queues/mqueue.md

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_getattr, mq_open, mq_receive, mq_send, mq_unlink};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use proclab::names::ipc_name;
use proclab::narrate::event;
use proclab::queues::{self, counted};
use proclab::record::{Decoder, Found, Tag, encode};
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const CAPACITY: i64 = 10; // messages the queue holds: the default msg_max
const SIZE: usize = 64; // bytes per message
const END: u32 = u32::MAX; // the producer number of end-of-work messages

fn run(args: &Args) -> anyhow::Result<()> {
    let name = ipc_name(); // /proclab.<uid>.<pid>.<random>: yours, and this run's only
    // ANCHOR: open
    let attr = MqAttr::new(0, CAPACITY, SIZE as i64, 0); // always given: see Pitfalls
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR, // create; EEXIST if it exists
        Mode::S_IRUSR | Mode::S_IWUSR,                           // 0600: only you
        Some(&attr),                                             // fixed for its life
    )
    .map_err(|errno| queues::open_error(&name, errno))?;
    // ANCHOR_END: open
    queues::say_opened(&name, CAPACITY, SIZE, "");
    let outcome = share_the_queue(args, &name, &queue);
    let _ = mq_unlink(name.as_str()); // after an error or Ctrl-C (ENOENT if already gone)
    outcome
}

// ANCHOR: run
fn share_the_queue(args: &Args, name: &str, queue: &MqdT) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        // SAFETY: single-threaded here; the child receives until its end-of-work message,
        // keeping a list in memory, prints a line, writes the list into a pipe, calls _exit.
        consumers.push(unsafe { child::spawn("consumer", || consume(queue)) }?);
    }
    let mut producers = Vec::new();
    for writer in 0..args.producers {
        // SAFETY: single-threaded here; the child encodes and sends its messages, writes its
        // empty result into a pipe and calls _exit.
        producers.push(unsafe { child::spawn("producer", || produce(queue, writer, args)) }?);
    }
    queues::say_forked(&consumers, &producers);
    let consumer_pids: Vec<Pid> = consumers.iter().map(|consumer| consumer.pid).collect();
    let (p, c) = (args.producers, args.consumers);
    mq_unlink(name).with_context(|| format!("mq_unlink({name})"))?; // all have it open now
    event("unlinked").say(format!(
        "mq_unlink({name}): every child has it open; the queue lives on, nameless"
    ));
    for producer in producers {
        producer.collect::<()>(&consumer_pids)?; // a dead consumer: give up, do not hang
    }
    let ends = counted(c, "end-of-work message");
    event("end_of_work").field("messages", c).say(format!(
        "producers done; sending {ends} at priority 0, one per consumer"
    ));
    for seq in 0..u64::from(c) {
        let end = encode(Tag { writer: END, seq }, SIZE);
        mq_send(queue, &end, 0).context("mq_send(end of work)")?; // behind all the work
    }
    let mut lists = Vec::new();
    for consumer in consumers {
        lists.push(consumer.collect::<Vec<Tag>>(&[])?);
    }
    // ANCHOR_END: run
    let seconds = start.elapsed().as_secs_f64();
    let tally = queues::account(&lists, &vec![args.messages; p as usize], SIZE);
    let left = mq_getattr(queue).context("mq_getattr")?.curmsgs(); // 0: every message taken
    queues::say_mqueue_summary(p, c, tally, left, seconds);
    Ok(())
}

// ANCHOR: produce
fn produce(queue: &MqdT, writer: u32, args: &Args) -> anyhow::Result<()> {
    for seq in 0..args.messages {
        let message = encode(Tag { writer, seq }, SIZE); // who, which, and a checksum
        mq_send(queue, &message, 0).context("mq_send")?; // a full queue: sleep until room
    }
    Ok(())
}
// ANCHOR_END: produce

// ANCHOR: consume
fn consume(queue: &MqdT) -> anyhow::Result<Vec<Tag>> {
    let (mut received, mut buffer) = (Vec::new(), [0u8; SIZE]); // buffer >= msgsize, or EMSGSIZE
    loop {
        let mut priority = 0; // every message here has priority 0: first in, first out
        let length = mq_receive(queue, &mut buffer, &mut priority).context("mq_receive")?;
        // One receive, one whole message: a queue keeps the boundaries a pipe does not.
        let [Found::Record(tag, _)] = Decoder::default().feed(&buffer[..length])[..] else {
            bail!("a damaged message");
        };
        if tag.writer == END {
            let (n, said) = (received.len(), counted(received.len() as u64, "message"));
            let stopping = format!("end-of-work message: stopping after {said}");
            event("end").field("received", n).say(stopping);
            return Ok(received);
        }
        received.push(tag);
    }
}
// ANCHOR_END: consume

/// Producers and consumers around one POSIX message queue; every message accounted for.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  mqueue\n  mqueue --producers 1 --consumers 3\n\n\
                        See also: mq_priorities, mq_full, mq_vs_pipe"
)]
struct Args {
    /// Producer processes (1-16).
    #[arg(long, value_name = "P", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    producers: u32,

    /// Consumer processes (1-16).
    #[arg(long, value_name = "C", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    consumers: u32,

    /// Messages per producer (1-100000).
    #[arg(long, value_name = "M", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
