//! mqueue — POSIX message queues: many producers, many consumers, priorities.
//!
//! Demonstrates: a message queue keeps message boundaries (one send, one receive), orders
//! messages by priority (FIFO within one priority), and lets several processes receive
//! from it safely. The kernel bounds it (msg_max, msgsize_max): a full queue blocks its
//! senders, or fails them with EAGAIN when they asked not to block.
//! Run:     cargo run --bin mqueue             (then --priorities, --max-messages 1,
//!          --nonblocking, --compare)
//! Observe: every message received exactly once; the highest priority first.
//! Book:    book/src/queues/mqueue.md

use std::ffi::CString;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_getattr, mq_open, mq_receive, mq_send, mq_unlink};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, pipe};
use proclab::child::Spawned;
use proclab::fdio::{read_exact, write_all};
use proclab::inspect::running;
use proclab::names::ipc_name;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, Tag, encode};
use proclab::{child, cli, narrate, signals};
use serde::{Deserialize, Serialize};

/// Producers and consumers around one POSIX message queue; every message accounted for.
///
/// P producers send tagged messages (producer, sequence number, priority, checksum); C
/// consumers receive them; the parent proves each arrived exactly once and that order was
/// kept per producer and priority. Consumers stop on one end-of-work message each, and the
/// queue is empty at the end. The queue's name is unlinked as soon as every process has it
/// open, so nothing is left behind even after kill -9 (except during --priorities --hold).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  mqueue\n  mqueue --producers 1 --consumers 3\n  mqueue --priorities\n  \
                        mqueue --max-messages 1 --nonblocking\n  mqueue --compare"
)]
struct Args {
    /// Producer processes (1-16).
    #[arg(long, value_name = "P", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    producers: u32,

    /// Consumer processes (1-16; default 2, or 1 with --compare).
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=16))]
    consumers: Option<u32>,

    /// Messages per producer (1-100000).
    #[arg(long, value_name = "M", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,

    /// Fill the queue before a consumer starts: it receives the highest priority first.
    #[arg(long, conflicts_with_all = ["producers", "consumers", "messages", "nonblocking", "compare"])]
    priorities: bool,

    /// The queue's capacity in messages (at most /proc/sys/fs/mqueue/msg_max).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    max_messages: i64,

    /// The size of each message in bytes (28 to /proc/sys/fs/mqueue/msgsize_max).
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(i64).range(28..))]
    message_size: i64,

    /// Producers send with O_NONBLOCK: a full queue answers EAGAIN, and they retry.
    #[arg(long)]
    nonblocking: bool,

    /// Also move the same messages through a pipe (length-prefixed, one reader) and
    /// compare messages per second; the queue then has one consumer too.
    #[arg(long)]
    compare: bool,

    /// With --priorities: keep the full queue, name and all, this long (0-3600 s) before
    /// the consumer starts, to look at it in /dev/mqueue.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds,
          requires = "priorities")]
    hold: std::time::Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

/// The priority a producer gives message `seq`: 1 to 3. Priority 0 is for end-of-work.
fn priority_of(seq: u64) -> u32 {
    (seq % 3) as u32 + 1
}

/// The writer number of end-of-work messages.
const END: u32 = u32::MAX;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    check_limits(&args);
    if args.compare && args.consumers.is_some_and(|consumers| consumers > 1) {
        cli::usage_error(
            "--compare uses one consumer (a pipe cannot have two readers without a lock)",
        );
    }
    if args.compare && args.message_size + 4 > libc::PIPE_BUF as i64 {
        cli::usage_error(&format!(
            "--compare needs --message-size of at most {}: a framed message must fit in one atomic pipe write",
            libc::PIPE_BUF - 4
        ));
    }
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| {
        if args.priorities {
            priorities(&args)
        } else {
            many_to_many(&args)
        }
    })
}

/// Asking for more than the kernel allows is a usage error that names the limit and the
/// file that sets it — not an opaque EINVAL from mq_open.
// ANCHOR: limits
fn check_limits(args: &Args) {
    for (flag, asked, file) in [
        ("--max-messages", args.max_messages, "msg_max"),
        ("--message-size", args.message_size, "msgsize_max"),
    ] {
        let path = format!("/proc/sys/fs/mqueue/{file}");
        let limit = limit(file);
        if asked > limit {
            cli::usage_error(&format!(
                "{flag} {asked} is more than this system allows: {path} is {limit} \
                 (a process with CAP_SYS_RESOURCE may go beyond it; this demo stays within)"
            ));
        }
    }
}

/// A limit from /proc/sys/fs/mqueue (`msg_max`, `msgsize_max`, `queues_max`).
fn limit(file: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}")).unwrap_or_default();
    text.trim().parse().unwrap_or(i64::MAX)
}
// ANCHOR_END: limits

/// The queue, open twice: for receiving (consumers) and for sending (producers, parent).
/// Its name is unlinked when every process has it, or when this is dropped.
struct Queue {
    name: CString,
    receive: MqdT,
    send: MqdT,
    unlinked: bool,
}

impl Queue {
    // ANCHOR: open
    fn create(max_messages: i64, message_size: i64, nonblocking: bool) -> anyhow::Result<Queue> {
        let name = CString::new(ipc_name())?;
        let attr = MqAttr::new(0, max_messages, message_size, 0); // nix needs explicit attributes
        let create = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY;
        let receive = mq_open(
            name.as_c_str(),
            create,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        )
        .map_err(|errno| explain_open_error(errno, &name))?;
        let mut flags = MQ_OFlag::O_WRONLY;
        if nonblocking {
            flags |= MQ_OFlag::O_NONBLOCK; // this description only: consumers still block
        }
        let send = mq_open(name.as_c_str(), flags, Mode::empty(), None)
            .map_err(|errno| explain_open_error(errno, &name))?;
        let queue = Queue {
            name,
            receive,
            send,
            unlinked: false,
        };
        let limits = ["msg_max", "msgsize_max", "queues_max"].map(|file| (file, limit(file)));
        event("mq_open")
            .field("name", queue.name())
            .field("max_messages", max_messages)
            .field("message_size", message_size)
            .field("limits", serde_json::Map::from_iter(limits.map(|(file, value)| (file.to_owned(), value.into()))))
            .say(format!(
                "mq_open({}, O_CREAT | O_EXCL, 0600, {{maxmsg {max_messages}, msgsize {message_size}}}); \
                 limits in /proc/sys/fs/mqueue: msg_max {}, msgsize_max {}, queues_max {}",
                queue.name(),
                limits[0].1,
                limits[1].1,
                limits[2].1
            ));
        Ok(queue)
    }
    // ANCHOR_END: open

    fn name(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    /// Removes the name: processes that have the queue open keep using it.
    fn unlink(&mut self) -> anyhow::Result<()> {
        if !self.unlinked {
            mq_unlink(self.name.as_c_str())
                .with_context(|| format!("mq_unlink({})", self.name()))?;
            self.unlinked = true;
        }
        Ok(())
    }

    fn left_in_queue(&self) -> anyhow::Result<i64> {
        Ok(mq_getattr(&self.receive).context("mq_getattr")?.curmsgs())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = self.unlink();
    }
}

fn explain_open_error(errno: Errno, name: &CString) -> anyhow::Error {
    let hint = match errno {
        Errno::EMFILE => " (RLIMIT_MSGQUEUE: your queues' total size is limited; see ulimit -q)",
        Errno::ENFILE => " (/proc/sys/fs/mqueue/queues_max queues exist already)",
        Errno::ENOSYS => " (this kernel has no POSIX message queues: CONFIG_POSIX_MQUEUE)",
        _ => "",
    };
    anyhow::anyhow!(
        "mq_open({}): {errno:?} ({}){hint}",
        name.to_string_lossy(),
        errno.desc()
    )
}

/// What a producer reports.
#[derive(Default, Serialize, Deserialize)]
struct Sent {
    eagain: u64,
    full_waits: u64,
}

/// What a consumer reports: (producer, seq, priority) in the order received.
#[derive(Default, Serialize, Deserialize)]
struct Received {
    messages: Vec<(u32, u64, u32)>,
    damaged: u64,
}

// ANCHOR: produce
fn produce(
    producer: u32,
    queue: &MqdT,
    messages: u64,
    size: usize,
    capacity: i64,
) -> anyhow::Result<Sent> {
    let mut sent = Sent::default();
    for seq in 0..messages {
        let message = encode(
            Tag {
                writer: producer,
                seq,
            },
            size,
        );
        let attributes = mq_getattr(queue)?;
        let nonblocking = attributes.flags() & libc::O_NONBLOCK as i64 != 0;
        if !nonblocking && attributes.curmsgs() == capacity {
            if sent.full_waits == 0 {
                event("full").say(format!(
                    "queue full ({capacity} of {capacity}): mq_send will wait for a consumer"
                ));
            }
            sent.full_waits += 1;
        }
        loop {
            match mq_send(queue, &message, priority_of(seq)) {
                Ok(()) => break,
                Err(Errno::EAGAIN) => {
                    if sent.eagain == 0 {
                        event("eagain").say("mq_send -> EAGAIN: the queue is full and I asked not to wait; retrying");
                    }
                    sent.eagain += 1;
                    std::thread::yield_now();
                }
                Err(error) => return Err(error).context("mq_send"),
            }
        }
    }
    Ok(sent)
}
// ANCHOR_END: produce

// ANCHOR: consume
fn consume(queue: &MqdT, size: usize) -> anyhow::Result<Received> {
    let mut received = Received::default();
    let mut buffer = vec![0u8; size]; // at least msgsize, or mq_receive fails with EMSGSIZE
    loop {
        let mut priority = 0;
        let length = mq_receive(queue, &mut buffer, &mut priority).context("mq_receive")?;
        // One receive, one whole message: a queue keeps the boundaries a pipe does not.
        match Decoder::default().feed(&buffer[..length]).as_slice() {
            [Found::Record(tag, _)] if tag.writer == END => {
                event("end")
                    .field("received", received.messages.len())
                    .say(format!(
                        "end-of-work message: stopping after {} messages",
                        received.messages.len()
                    ));
                return Ok(received);
            }
            [Found::Record(tag, _)] => received.messages.push((tag.writer, tag.seq, priority)),
            _ => received.damaged += 1,
        }
    }
}
// ANCHOR_END: consume

fn send_end_of_work(queue: &MqdT, consumers: &[Pid], size: usize) -> anyhow::Result<()> {
    for consumer in 0..consumers.len() as u32 {
        let message = encode(
            Tag {
                writer: END,
                seq: u64::from(consumer),
            },
            size,
        );
        loop {
            match mq_send(queue, &message, 0) {
                Err(Errno::EAGAIN) => {
                    signals::bail_if_stopped()?;
                    if let Some(ended) = consumers.iter().find(|pid| !running(pid.as_raw())) {
                        bail!("consumer {ended} ended before the end of work");
                    }
                    std::thread::yield_now();
                }
                other => break other.context("mq_send(end of work)")?,
            }
        }
    }
    Ok(())
}

fn many_to_many(args: &Args) -> anyhow::Result<()> {
    let size = args.message_size as usize;
    let consumers = args.consumers.unwrap_or(if args.compare { 1 } else { 2 });
    // ANCHOR: run
    let mut queue = Queue::create(args.max_messages, args.message_size, args.nonblocking)?;
    let start = Instant::now();
    let mut reading = Vec::new();
    for _ in 0..consumers {
        // SAFETY: single-threaded here.
        reading.push(unsafe { child::spawn("consumer", || consume(&queue.receive, size)) }?);
    }
    let mut sending = Vec::new();
    for producer in 0..args.producers {
        // SAFETY: single-threaded here.
        sending.push(unsafe {
            child::spawn("producer", || {
                produce(
                    producer,
                    &queue.send,
                    args.messages,
                    size,
                    args.max_messages,
                )
            })
        }?);
    }
    let pids = |children: &[Spawned]| {
        children
            .iter()
            .map(|child| child.pid.as_raw())
            .collect::<Vec<_>>()
    };
    event("forked")
        .field("consumers", pids(&reading))
        .field("producers", pids(&sending))
        .say(format!(
            "forked {consumers} consumers and {} producers",
            args.producers
        ));
    queue.unlink()?; // every process has it open now: the name can go
    event("unlinked").say(format!(
        "mq_unlink({}): {consumers} consumers and {} producers have it open; the queue lives on, nameless",
        queue.name(),
        args.producers
    ));
    let consumer_pids: Vec<Pid> = reading.iter().map(|consumer| consumer.pid).collect();
    let mut sent = Sent::default();
    for producer in sending {
        let report: Sent = producer.collect(&consumer_pids)?;
        (sent.eagain, sent.full_waits) = (
            sent.eagain + report.eagain,
            sent.full_waits + report.full_waits,
        );
    }
    signals::bail_if_stopped()?;
    event("end_of_work").field("messages", consumers).say(format!(
        "producers done; sending {consumers} end-of-work messages at priority 0, one per consumer"
    ));
    send_end_of_work(&queue.send, &consumer_pids, size)?; // priority 0: behind all the work
    let mut received = Vec::new();
    for consumer in reading {
        received.push(consumer.collect::<Received>(&[])?);
    }
    // ANCHOR_END: run
    let seconds = start.elapsed().as_secs_f64();
    let left = queue.left_in_queue()?;
    let (tally, order_ok, priorities_kept) =
        account(&received, args.producers, args.messages, size);
    let rate = tally.received as f64 / seconds;
    let mut summary = event("summary")
        .field("producers", args.producers)
        .field("consumers", consumers)
        .fields(tally)
        .field("order_ok", order_ok)
        .field("priorities_kept", priorities_kept)
        .field("priority_order_ok", None::<bool>)
        .field("left_in_queue", left)
        .field("full_waits", sent.full_waits)
        .field("eagain", sent.eagain)
        .field("messages_per_s", rate);
    let mut text = format!(
        "summary: sent {}, received {} exactly once: {}; order kept per producer and priority: {order_ok}; \
         left in queue: {left}; {rate:.0} messages/s",
        tally.sent,
        tally.received,
        tally.exactly_once()
    );
    if args.compare {
        let pipe_rate = through_a_pipe(args)?;
        summary = summary.field("pipe_messages_per_s", pipe_rate);
        text += &format!("; through a pipe: {pipe_rate:.0} messages/s");
    }
    summary.say(text);
    Ok(())
}

/// Checks what the consumers received: exactly once (the ledger), in order per consumer
/// for each (producer, priority), and with the priority each message was sent with.
// ANCHOR: account
fn account(
    received: &[Received],
    producers: u32,
    messages: u64,
    size: usize,
) -> (proclab::record::Tally, bool, bool) {
    let mut ledger = Ledger::new();
    let (mut order_ok, mut priorities_kept) = (true, true);
    for consumer in received {
        let mut last_seq = std::collections::HashMap::new();
        for &(producer, seq, priority) in &consumer.messages {
            ledger.note(&Found::Record(
                Tag {
                    writer: producer,
                    seq,
                },
                size,
            ));
            priorities_kept &= priority == priority_of(seq);
            let previous = last_seq.insert((producer, priority), seq);
            order_ok &= previous.is_none_or(|previous| previous < seq);
        }
    }
    let mut tally = ledger.check(&vec![messages; producers as usize]);
    tally.torn = received.iter().map(|consumer| consumer.damaged).sum();
    tally.in_order = order_ok;
    (tally, order_ok, priorities_kept)
}
// ANCHOR_END: account

/// `--compare`: the same messages through one pipe, framed with a 4-byte length, into one
/// reader (several readers of one pipe would split frames between them). Messages/s.
fn through_a_pipe(args: &Args) -> anyhow::Result<f64> {
    let size = args.message_size as usize;
    anyhow::ensure!(
        size + 4 <= libc::PIPE_BUF,
        "--compare needs --message-size of at most {}",
        libc::PIPE_BUF - 4
    );
    let (read_end, write_end) = pipe().context("pipe")?;
    let start = Instant::now();
    let mut writers = Vec::new();
    for producer in 0..args.producers {
        // SAFETY: single-threaded here.
        writers.push(unsafe {
            child::spawn("producer", || {
                for seq in 0..args.messages {
                    let mut frame = (size as u32).to_le_bytes().to_vec();
                    frame.extend(encode(
                        Tag {
                            writer: producer,
                            seq,
                        },
                        size,
                    ));
                    write_all(&write_end, &frame)?; // one write of at most PIPE_BUF: frames never mix
                }
                Ok(Sent::default())
            })
        }?);
    }
    drop(write_end);
    let (mut ledger, mut length, mut body) = (Ledger::new(), [0u8; 4], vec![0u8; size]);
    while read_exact(&read_end, &mut length)? {
        read_exact(&read_end, &mut body[..u32::from_le_bytes(length) as usize])?;
        Decoder::default()
            .feed(&body)
            .iter()
            .for_each(|found| ledger.note(found));
    }
    let rate = ledger
        .check(&vec![args.messages; args.producers as usize])
        .received as f64
        / start.elapsed().as_secs_f64();
    for writer in writers {
        writer.collect::<Sent>(&[])?;
    }
    event("pipe").field("messages_per_s", rate).say(format!(
        "the same messages through a pipe, length-prefixed, one reader: {rate:.0} messages/s \
         (no priorities, and no second reader without a lock)"
    ));
    Ok(rate)
}

/// The priorities `--priorities` sends, in a mixed order.
fn mixed_priority(seq: u64) -> u32 {
    [1, 3, 0, 2][seq as usize % 4]
}

/// `--priorities`: fill the queue with messages of mixed priorities, then let one consumer
/// empty it.
fn priorities(args: &Args) -> anyhow::Result<()> {
    let (count, size) = (args.max_messages as u64, args.message_size as usize);
    let mut queue = Queue::create(args.max_messages, args.message_size, false)?;
    if args.hold.is_zero() {
        queue.unlink()?; // this process has it open: the name can go at once
    }
    // ANCHOR: fill
    for seq in 0..count {
        let priority = mixed_priority(seq);
        mq_send(&queue.send, &encode(Tag { writer: 0, seq }, size), priority).context("mq_send")?;
        event("send")
            .field("seq", seq)
            .field("priority", priority)
            .say(format!("mq_send(message {seq}, priority {priority})"));
    }
    // ANCHOR_END: fill
    let held = queue.left_in_queue()?;
    event("filled").field("messages", held).say(format!(
        "the queue holds {held} messages; now a consumer starts"
    ));
    if !args.hold.is_zero() {
        let seconds = args.hold.as_secs_f64();
        event("hold")
            .field("name", queue.name())
            .field("seconds", seconds)
            .say(format!(
                "holding it {seconds}s: with /dev/mqueue mounted, cat /dev/mqueue{}",
                queue.name()
            ));
        signals::sleep(args.hold);
        signals::bail_if_stopped()?;
    }
    // SAFETY: single-threaded here.
    let consumer = unsafe {
        child::spawn("consumer", || {
            let mut received = Received::default();
            let mut buffer = vec![0u8; size];
            for _ in 0..count {
                let mut priority = 0;
                let length =
                    mq_receive(&queue.receive, &mut buffer, &mut priority).context("mq_receive")?;
                let [Found::Record(tag, _)] = Decoder::default().feed(&buffer[..length])[..] else {
                    bail!("damaged message")
                };
                event("receive")
                    .field("seq", tag.seq)
                    .field("priority", priority)
                    .say(format!(
                        "mq_receive -> message {}, priority {priority}",
                        tag.seq
                    ));
                received.messages.push((0, tag.seq, priority));
            }
            Ok(received)
        })
    }?;
    queue.unlink()?;
    let received: Received = consumer.collect(&[])?;
    // ANCHOR: priority_order
    let priority_order_ok = received.messages.windows(2).all(|pair| {
        let ((_, seq_a, prio_a), (_, seq_b, prio_b)) = (pair[0], pair[1]);
        prio_a > prio_b || (prio_a == prio_b && seq_a < seq_b) // highest first; FIFO within one
    });
    // ANCHOR_END: priority_order
    let mut ledger = Ledger::new();
    received
        .messages
        .iter()
        .for_each(|&(_, seq, _)| ledger.note(&Found::Record(Tag { writer: 0, seq }, size)));
    let mut tally = ledger.check(&[count]);
    tally.in_order = priority_order_ok; // the order a priority queue promises
    let left = queue.left_in_queue()?;
    event("summary")
        .field("producers", 1)
        .field("consumers", 1)
        .fields(tally)
        .field("order_ok", priority_order_ok)
        .field("priorities_kept", received.messages.iter().all(|&(_, seq, priority)| priority == mixed_priority(seq)))
        .field("priority_order_ok", priority_order_ok)
        .field("left_in_queue", left)
        .field("full_waits", 0)
        .field("eagain", 0)
        .field("messages_per_s", None::<f64>)
        .say(format!(
            "summary: {} messages out, highest priority first and FIFO within a priority: {priority_order_ok}",
            tally.received
        ));
    Ok(())
}
