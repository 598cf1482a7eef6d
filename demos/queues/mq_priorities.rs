//! mq_priorities — a queue hands out the highest priority first, FIFO within a priority.
//!
//! Demonstrates: the kernel keeps a message queue sorted by the priority each mq_send
//! gave, and by arrival within one priority; mq_receive always takes the oldest message
//! of the highest priority there is.
//! Run:     cargo run --bin mq_priorities     (add --hold 30 to look at the full queue)
//! Observe: sent as priorities 1 3 0 2 1 3 0 2 1 3, received as 3 3 3 2 2 1 1 1 0 0.
//! Book:    book/src/queues/mqueue.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::mqueue::{MqdT, mq_getattr, mq_receive, mq_send, mq_unlink};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe, read};
use proclab::names::ipc_name;
use proclab::narrate::event;
use proclab::queues::{self, create};
use proclab::record::{Decoder, Found, Tag, encode};
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const COUNT: u64 = 10; // messages: the queue's capacity, the default msg_max
const SIZE: usize = 64; // bytes per message

fn run(args: &Args) -> anyhow::Result<()> {
    let name = ipc_name(); // /proclab.<uid>.<pid>.<random>: yours, and this run's only
    // With --hold the name lives for seconds: a guard, forked before it exists, removes it.
    let guard = (!args.hold.is_zero())
        .then(|| guard_the_name(&name))
        .transpose()?;
    let queue = create(&name, COUNT as i64, SIZE)?; // O_CREAT | O_EXCL | O_RDWR, 0600: mqueue
    if args.hold.is_zero() {
        // At once: kill -9 can leave the name only in the instant between the two calls.
        mq_unlink(name.as_str()).context("mq_unlink")?; // the consumer inherits the queue
    }
    queues::say_opened(&name, COUNT as i64, SIZE, "");
    let outcome = fill_then_empty(args, &name, &queue);
    let _ = mq_unlink(name.as_str()); // after an error or Ctrl-C (ENOENT if already gone)
    if let Some((guard, write_end)) = guard {
        drop(write_end); // the guard's EOF: it finds the name gone and ends
        waitpid(guard, None).context("waitpid(guard)")?;
    }
    outcome
}

/// The priority message `seq` is sent with: a mixed order, 1 3 0 2 1 3…
fn mixed_priority(seq: u64) -> u32 {
    [1, 3, 0, 2][seq as usize % 4]
}

fn fill_then_empty(args: &Args, name: &str, queue: &MqdT) -> anyhow::Result<()> {
    // ANCHOR: fill
    for seq in 0..COUNT {
        let priority = mixed_priority(seq);
        mq_send(queue, &encode(Tag { writer: 0, seq }, SIZE), priority).context("mq_send")?;
        event("send")
            .field("seq", seq)
            .field("priority", priority)
            .say(format!("mq_send(message {seq}, priority {priority})"));
    }
    // ANCHOR_END: fill
    let held = mq_getattr(queue).context("mq_getattr")?.curmsgs();
    let text = format!("the queue holds {held} messages; now a consumer starts");
    event("filled").field("messages", held).say(text);
    if !args.hold.is_zero() {
        queues::say_holding(name, args.hold); // and how to look at it in /dev/mqueue
        signals::sleep(args.hold);
        signals::bail_if_stopped()?; // Ctrl-C: run() removes the name
    }
    // SAFETY: single-threaded here; the child receives the ten messages, printing each
    // and keeping a list in memory, writes the list into a pipe and calls _exit.
    let consumer = unsafe { child::spawn("consumer", || receive_all(queue)) }?;
    if !args.hold.is_zero() {
        mq_unlink(name).context("mq_unlink")?; // the consumer has it open now
    }
    let received: Vec<(u64, u32)> = consumer.collect(&[])?;
    // ANCHOR: priority_order
    // Highest priority first; first in, first out within one priority.
    let priority_order_ok = received.windows(2).all(|pair| {
        let ((seq_a, priority_a), (seq_b, priority_b)) = (pair[0], pair[1]);
        priority_a > priority_b || (priority_a == priority_b && seq_a < seq_b)
    });
    // ANCHOR_END: priority_order
    let left = mq_getattr(queue).context("mq_getattr")?.curmsgs();
    let sent = (COUNT, SIZE); // each exactly once, each with the priority it was sent with
    queues::say_priorities_summary(&received, sent, priority_order_ok, mixed_priority, left);
    Ok(())
}

// ANCHOR: receive
/// The consumer: ten receives; returns (seq, priority) in the order they came out.
fn receive_all(queue: &MqdT) -> anyhow::Result<Vec<(u64, u32)>> {
    let (mut received, mut buffer) = (Vec::new(), [0u8; SIZE]); // buffer >= msgsize, or EMSGSIZE
    for _ in 0..COUNT {
        let mut priority = 0;
        let length = mq_receive(queue, &mut buffer, &mut priority).context("mq_receive")?;
        let [Found::Record(Tag { seq, .. }, _)] = Decoder::default().feed(&buffer[..length])[..]
        else {
            bail!("damaged message")
        };
        event("receive")
            .field("seq", seq)
            .field("priority", priority) // the kernel says which priority it was sent with
            .say(format!("mq_receive -> message {seq}, priority {priority}"));
        received.push((seq, priority));
    }
    Ok(received)
}
// ANCHOR_END: receive

// ANCHOR: guard
/// Forks the guard of `name`: at EOF on a pipe only the parent writes to, it removes the name.
fn guard_the_name(name: &str) -> anyhow::Result<(Pid, OwnedFd)> {
    let (read_end, write_end) = pipe().context("pipe")?;
    // SAFETY: single-threaded here; the guard reads its pipe to EOF, calls mq_unlink and
    // _exit. Not bound to die with the parent: it must outlive it, for one call.
    let guard = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_unbound_then_exit(|| {
            drop(write_end);
            while let Err(Errno::EINTR) = read(&read_end, &mut [0u8; 1]) {} // until EOF
            let _ = mq_unlink(name); // the parent is gone, or has removed it
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    event("guard").field("guard", guard.as_raw()).say(format!(
        "fork() -> guard {guard}: when I am gone, even by kill -9, it removes the name"
    ));
    Ok((guard, write_end))
}
// ANCHOR_END: guard

/// Fill a POSIX message queue with mixed priorities, then let one consumer empty it.
#[derive(Parser)]
#[command(after_help = "Examples:\n  mq_priorities\n  mq_priorities --hold 30")]
struct Args {
    /// Keep the full queue, name and all, this long (0-3600 s), to look in /dev/mqueue.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: std::time::Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
