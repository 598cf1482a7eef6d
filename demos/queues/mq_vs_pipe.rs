//! mq_vs_pipe — the same messages through a POSIX message queue and through a pipe.
//!
//! Demonstrates: a queue keeps each message whole, so its reader needs no framing but must
//! know when to stop (a queue has no end-of-file); a pipe is a byte stream, so each
//! message carries its length and goes in one write of at most PIPE_BUF bytes, and the
//! reader stops at EOF. Moving a few bytes into a pipe's buffer costs less.
//! Run:     cargo run --release --bin mq_vs_pipe   (add --message-size 4000)
//! Observe: both deliver every message exactly once; compare the two messages/s.
//! Book:    book/src/queues/mqueue.md

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use nix::mqueue::{MqdT, mq_getattr, mq_receive, mq_send, mq_unlink};
use nix::unistd::pipe;
use proclab::fdio::{read_exact, write_all};
use proclab::names::ipc_name;
use proclab::queues::{self, Rates, create, message_size};
use proclab::record::{Decoder, Found, Ledger, Tag, Tally, encode};
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const CAPACITY: i64 = 10; // messages the queue holds: the default msg_max
const END: u32 = u32::MAX; // the producer number of the end-of-work message
const ROUNDS: usize = 3; // each way, taking turns: one run alone says little

fn run(args: &Args) -> anyhow::Result<()> {
    let (name, size) = (ipc_name(), args.message_size); // the name: yours, this run's only
    let queue = create(&name, CAPACITY, size)?; // O_CREAT | O_EXCL | O_RDWR, 0600
    mq_unlink(name.as_str()).context("mq_unlink")?; // the children inherit the descriptor
    queues::say_opened(&name, CAPACITY, size, ", then mq_unlink");
    let (mut rates, mut once, mut tally) = (Rates::default(), true, Tally::default());
    for round in 1..=ROUNDS {
        let start = Instant::now();
        tally = through_the_queue(args, &queue)?;
        let rate = tally.received as f64 / start.elapsed().as_secs_f64();
        let (pipe_rate, piped) = through_a_pipe(args)?;
        rates.note(round, rate, pipe_rate, piped); // narrated: the round's two rates
        once &= tally.exactly_once();
    }
    let left = mq_getattr(&queue).context("mq_getattr")?.curmsgs();
    rates.say_summary(tally, once, left, args.producers); // the medians of the rounds
    Ok(())
}

// ANCHOR: queue
fn through_the_queue(args: &Args, queue: &MqdT) -> anyhow::Result<Tally> {
    // SAFETY: single-threaded here; the child receives until the end-of-work message,
    // counting in a ledger in memory, writes its tally into a pipe and calls _exit.
    let consumer = unsafe { child::spawn("consumer", || receive_all(args, queue)) }?;
    let mut producers = Vec::new();
    for writer in 0..args.producers {
        // SAFETY: single-threaded here; the child sends, writes () into a pipe, calls _exit.
        producers.push(unsafe {
            child::spawn("producer", || {
                for seq in 0..args.messages {
                    let message = encode(Tag { writer, seq }, args.message_size);
                    mq_send(queue, &message, 0).context("mq_send")?; // one send, one message
                }
                Ok(())
            })
        }?);
    }
    for producer in producers {
        producer.collect::<()>(&[consumer.pid])?; // a dead consumer: give up, do not hang
    }
    // A queue has no end-of-file: tell the consumer there is no more, behind the work.
    let (writer, seq) = (END, 0);
    let end = encode(Tag { writer, seq }, args.message_size);
    mq_send(queue, &end, 0).context("mq_send(end of work)")?;
    consumer.collect(&[])
}

fn receive_all(args: &Args, queue: &MqdT) -> anyhow::Result<Tally> {
    let (mut ledger, mut buffer) = (Ledger::new(), vec![0u8; args.message_size]);
    loop {
        let length = mq_receive(queue, &mut buffer, &mut 0).context("mq_receive")?;
        match Decoder::default().feed(&buffer[..length])[..] {
            [Found::Record(tag, _)] if tag.writer == END => break, // no more
            ref found => found.iter().for_each(|found| ledger.note(found)), // one message, whole
        }
    }
    Ok(ledger.check(&vec![args.messages; args.producers as usize]))
}
// ANCHOR_END: queue

// ANCHOR: pipe
/// The same messages through one pipe, each framed by a 4-byte length, into one reader
/// (several readers of one pipe would split frames between them). Messages/s, received.
fn through_a_pipe(args: &Args) -> anyhow::Result<(f64, u64)> {
    let size = args.message_size;
    let (read_end, write_end) = pipe().context("pipe")?;
    let start = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..args.producers {
        // SAFETY: single-threaded here; the child writes frames, then () in a pipe, calls _exit.
        writers.push(unsafe {
            child::spawn("producer", || {
                for seq in 0..args.messages {
                    let mut frame = (size as u32).to_le_bytes().to_vec();
                    frame.extend(encode(Tag { writer, seq }, size));
                    write_all(&write_end, &frame)?; // one write of at most PIPE_BUF: frames never mix
                }
                Ok(())
            })
        }?);
    }
    drop(write_end); // the writers hold the only write ends: EOF when they are done
    let (mut ledger, mut length, mut body) = (Ledger::new(), [0u8; 4], vec![0u8; size]);
    while read_exact(&read_end, &mut length)? {
        read_exact(&read_end, &mut body[..u32::from_le_bytes(length) as usize])?;
        let found = Decoder::default().feed(&body);
        found.iter().for_each(|found| ledger.note(found));
    }
    let tally = ledger.check(&vec![args.messages; args.producers as usize]);
    let rate = tally.received as f64 / start.elapsed().as_secs_f64();
    for writer in writers {
        writer.collect::<()>(&[])?;
    }
    Ok((rate, tally.received))
}
// ANCHOR_END: pipe

/// The same messages through a POSIX message queue and through a pipe, and how fast.
#[derive(Parser)]
#[command(after_help = "Examples:\n  mq_vs_pipe\n  mq_vs_pipe --message-size 4000")]
struct Args {
    /// Producer processes (1-16).
    #[arg(long, value_name = "P", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    producers: u32,

    /// Messages per producer (1-100000).
    #[arg(long, value_name = "M", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,

    /// The size of each message in bytes (28 to 4092, so that a frame fits in PIPE_BUF).
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = message_size)]
    message_size: usize,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
