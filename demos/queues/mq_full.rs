//! mq_full — a full queue: a blocking sender sleeps in the kernel, a non-blocking one gets EAGAIN.
//!
//! Demonstrates: the kernel bounds a queue (maxmsg, within /proc/sys/fs/mqueue/msg_max);
//! a full queue puts mq_send to sleep in the kernel until a receiver makes room, or, on a
//! descriptor opened with O_NONBLOCK, fails it at once with EAGAIN: the sender must retry.
//! Run:     cargo run --bin mq_full           (then --max-messages 1 --nonblocking)
//! Observe: the kernel says the blocked producer is S (sleeping); O_NONBLOCK: EAGAIN, R.
//! Book:    book/src/queues/mqueue.md

use std::process::ExitCode;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_getattr, mq_open, mq_send, mq_unlink};
use nix::sys::stat::Mode;
use proclab::inspect::settled_state;
use proclab::names::ipc_name;
use proclab::narrate::event;
use proclab::queues::{self, limit, lost, receive_unless};
use proclab::record::{Decoder, Found, Ledger, Tag, encode};
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const PRODUCERS: u32 = 3;
const MESSAGES: u64 = 300; // per producer: more than a queue of 100 holds
const SIZE: usize = 64; // bytes per message

fn run(args: &Args) -> anyhow::Result<()> {
    let msg_max = limit("msg_max"); // from /proc/sys/fs/mqueue
    // ANCHOR: limits
    // Too much is a usage error that names the limit and its file, not mq_open's EINVAL.
    if args.max_messages > msg_max {
        cli::usage_error(&format!(
            "--max-messages {} is more than this system allows: /proc/sys/fs/mqueue/msg_max is \
             {msg_max} (a process with CAP_SYS_RESOURCE may go beyond it; this demo stays within)",
            args.max_messages
        ));
    }
    // ANCHOR_END: limits
    let name = ipc_name(); // /proclab.<uid>.<pid>.<random>: yours, and this run's only
    // ANCHOR: open
    let attr = MqAttr::new(0, args.max_messages, SIZE as i64, 0); // within the limits
    let create = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY;
    let owner_only = Mode::S_IRUSR | Mode::S_IWUSR; // 0600
    let receive = mq_open(name.as_str(), create, owner_only, Some(&attr));
    let receive = receive.with_context(|| format!("mq_open({name})"))?;
    // O_NONBLOCK belongs to an open file description, not to the queue: the producers get
    // a description of their own, and the parent's receives still block.
    let mut flags = MQ_OFlag::O_WRONLY;
    if args.nonblocking {
        flags |= MQ_OFlag::O_NONBLOCK; // a full queue answers EAGAIN instead of waiting
    }
    let send = mq_open(name.as_str(), flags, Mode::empty(), Some(&attr)); // (attr unused)
    mq_unlink(name.as_str()).context("mq_unlink")?; // the children inherit the descriptors
    let send = send.with_context(|| format!("mq_open({name}, O_WRONLY)"))?;
    // ANCHOR_END: open
    queues::say_opened_within_limits(&name, args.max_messages, SIZE); // and the limits
    fill_then_drain(args, &receive, &send)
}

// ANCHOR: produce
/// A producer: sends its messages; returns (sends that found the queue full, EAGAINs).
fn produce(send: &MqdT, writer: u32) -> anyhow::Result<(u64, u64)> {
    let (mut full_waits, mut eagain) = (0, 0);
    for seq in 0..MESSAGES {
        let queue = mq_getattr(send)?; // mq_flags: this description's O_NONBLOCK
        let (blocking, capacity) = (queue.flags() & libc::O_NONBLOCK as i64 == 0, queue.maxmsg());
        if blocking && queue.curmsgs() == capacity {
            if full_waits == 0 {
                let full = format!("queue full ({capacity} of {capacity}): mq_send will wait");
                event("full").say(full + " for a consumer");
            }
            full_waits += 1;
        }
        let message = encode(Tag { writer, seq }, SIZE);
        while let Err(errno) = mq_send(send, &message, 0) {
            ensure!(errno == Errno::EAGAIN, "mq_send: {errno}");
            if eagain == 0 {
                event("eagain").say(EAGAIN);
            }
            eagain += 1;
            std::thread::yield_now(); // nothing will wake us when there is room: try again
        }
    }
    Ok((full_waits, eagain))
}
// ANCHOR_END: produce

const EAGAIN: &str = "mq_send -> EAGAIN: the queue is full and I asked not to wait; retrying";

// ANCHOR: drain
fn fill_then_drain(args: &Args, receive: &MqdT, send: &MqdT) -> anyhow::Result<()> {
    let mut producers = Vec::new();
    for writer in 0..PRODUCERS {
        // SAFETY: single-threaded here; the child encodes and sends its messages, prints at
        // most one line, writes two counts into a pipe and calls _exit.
        producers.push(unsafe { child::spawn("producer", || produce(send, writer)) }?);
    }
    // Nobody receives yet: once the queue is full, is a producer asleep in mq_send, or running?
    let first = producers[0].pid.as_raw();
    let (state, place) = settled_state(first, |_, place| {
        if let Some(lost) = lost(&producers, &[0; PRODUCERS as usize], MESSAGES) {
            bail!(lost); // none can be done yet: 300 messages, a queue of 100 at most
        }
        let full = mq_getattr(receive)?.curmsgs() == args.max_messages;
        Ok(full && (args.nonblocking || place != "0")) // place: where it sleeps; 0: it runs
    })?;
    queues::say_producer_state(first, state, &place); // S in a sleeping mq_send, or R
    let (mut ledger, mut buffer) = (Ledger::new(), [0u8; SIZE]); // at least msgsize
    let mut got = [0; PRODUCERS as usize]; // messages from each producer
    for _ in 0..u64::from(PRODUCERS) * MESSAGES {
        // Each receive makes room, and the kernel wakes a sleeping producer. A producer
        // killed half-way would leave us waiting for ever: the receive watches them.
        let length = receive_unless(receive, &mut buffer, || lost(&producers, &got, MESSAGES))?;
        for found in Decoder::default().feed(&buffer[..length]) {
            ledger.note(&found);
            if let Found::Record(tag, _) = found {
                got[tag.writer as usize] += 1;
            }
        }
    }
    let (mut full_waits, mut eagain) = (0, 0);
    for producer in producers {
        let (full, again): (u64, u64) = producer.collect(&[])?;
        (full_waits, eagain) = (full_waits + full, eagain + again);
    }
    // ANCHOR_END: drain
    let tally = ledger.check(&[MESSAGES; PRODUCERS as usize]);
    let left = mq_getattr(receive).context("mq_getattr")?.curmsgs();
    queues::say_full_summary(PRODUCERS, tally, left, (full_waits, eagain));
    Ok(())
}

/// A full POSIX message queue: senders that wait, or senders told EAGAIN.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  mq_full\n  mq_full --max-messages 1 --nonblocking\n  \
                        mq_full --max-messages 11     # beyond the default msg_max"
)]
struct Args {
    /// The queue's capacity in messages (1-100, at most /proc/sys/fs/mqueue/msg_max).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=100))]
    max_messages: i64,

    /// Producers send with O_NONBLOCK: a full queue answers EAGAIN, and they retry.
    #[arg(long)]
    nonblocking: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
