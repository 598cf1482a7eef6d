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
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_getattr, mq_open, mq_receive, mq_send, mq_unlink};
use nix::sys::stat::Mode;
use nix::unistd::pipe;
use proclab::fdio::{read_exact, write_all};
use proclab::names::ipc_name;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, MIN_SIZE, Tag, Tally, encode};
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const CAPACITY: i64 = 10; // messages the queue holds: the default msg_max
const END: u32 = u32::MAX; // the producer number of the end-of-work message
const FITS: usize = libc::PIPE_BUF - 4; // the largest message a framed write keeps whole

fn run(args: &Args) -> anyhow::Result<()> {
    let name = ipc_name(); // /proclab.<uid>.<pid>.<random>: yours, and this run's only
    let attr = MqAttr::new(0, CAPACITY, args.message_size as i64, 0); // always given
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR, // create; EEXIST if it exists
        Mode::S_IRUSR | Mode::S_IWUSR,                           // 0600: only you
        Some(&attr),                                             // fixed for its life
    )
    .with_context(|| format!("mq_open({name})"))?;
    mq_unlink(name.as_str()).context("mq_unlink")?; // the children inherit the descriptor
    event("mq_open")
        .field("name", &name)
        .field("max_messages", CAPACITY)
        .field("message_size", args.message_size)
        .say(format!(
            "mq_open({name}, O_CREAT | O_EXCL | O_RDWR, 0600, {{maxmsg {CAPACITY}, msgsize {}}}), then mq_unlink",
            args.message_size
        ));
    let start = Instant::now();
    let tally = through_the_queue(args, &queue)?;
    let rate = tally.received as f64 / start.elapsed().as_secs_f64();
    let pipe_rate = through_a_pipe(args)?;
    let left = mq_getattr(&queue).context("mq_getattr")?.curmsgs();
    let (sent, received, once) = (tally.sent, tally.received, tally.exactly_once());
    event("summary")
        .field("producers", args.producers)
        .field("consumers", 1)
        .fields(tally)
        .field("left_in_queue", left)
        .field("messages_per_s", rate)
        .field("pipe_messages_per_s", pipe_rate)
        .say(format!(
            "summary: sent {sent}, received {received} exactly once: {once}; left in queue: \
             {left}; {rate:.0} messages/s; through a pipe: {pipe_rate:.0} messages/s"
        ));
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
/// (several readers of one pipe would split frames between them). Messages/s.
fn through_a_pipe(args: &Args) -> anyhow::Result<f64> {
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
    event("pipe")
        .field("messages_per_s", rate)
        .field("received", tally.received)
        .say(format!(
            "the same messages through a pipe, length-prefixed, one reader: {rate:.0} messages/s \
             (no priorities, and no second reader without a lock)"
        ));
    Ok(rate)
}
// ANCHOR_END: pipe

/// `--message-size`: a record (28 bytes at least) that the queue takes (msgsize_max) and
/// whose frame, with its 4-byte length, fits in one atomic pipe write (PIPE_BUF).
fn frame_fits(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|_| format!("not a number: {text}"))?;
    let limit = std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max").unwrap_or_default();
    let msgsize_max: usize = limit.trim().parse().unwrap_or(usize::MAX);
    let most = FITS.min(msgsize_max); // a frame fits in one atomic pipe write; the queue's limit
    if !(MIN_SIZE..=most).contains(&size) {
        return Err(format!(
            "{size} is not between {MIN_SIZE} and {most} bytes (PIPE_BUF, and \
             /proc/sys/fs/mqueue/msgsize_max = {msgsize_max})"
        ));
    }
    Ok(size)
}

/// The same messages through a POSIX message queue and through a pipe, and how fast.
///
/// P producers send M tagged messages each into a queue of 10, then through one pipe,
/// framed with a 4-byte length; each way one reader proves every message arrived exactly
/// once, and the rates are printed. Build with --release for representative numbers.
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
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = frame_fits)]
    message_size: usize,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
