//! queues — plumbing of the POSIX message-queue programs (mqueue, mq_priorities, mq_full,
//! mq_vs_pipe).
//!
//! mqueue writes out `mq_open` with its flags, mode and attributes; the programs after it
//! create their private queue with [`create`]. The kernel's limits, a receive that notices
//! a partner's death, a count with its plural, and the wording of the programs' `mq_open`,
//! hold and summary lines (the `say_*` functions) are here so that each program shows
//! only its own lesson.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_open, mq_receive};
use nix::sys::stat::Mode;
use serde_json::json;

use crate::child::Spawned;
use crate::inspect::running;
use crate::measure::median;
use crate::narrate::event;
use crate::record::{Found, Ledger, Tag, Tally};
use crate::signals;

/// Creates the queue `name`, exclusively (EEXIST if it exists), mode 0600, for reading
/// and writing, holding `capacity` messages of at most `size` bytes. The attributes are
/// always given: without them nix passes garbage and the kernel answers EINVAL.
///
/// # References: mq_open(3), mq_overview(7)
pub fn create(name: &str, capacity: i64, size: usize) -> anyhow::Result<MqdT> {
    let attr = MqAttr::new(0, capacity, size as i64, 0);
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
    mq_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr))
        .map_err(|errno| open_error(name, errno))
}

/// The error of a failed `mq_open(name)`, in words; EMFILE names the limit that is used up.
///
/// # References: mq_open(3) "ERRORS", getrlimit(2) "RLIMIT_MSGQUEUE"
pub fn open_error(name: &str, errno: Errno) -> anyhow::Error {
    match errno {
        Errno::EMFILE => anyhow!("mq_open({name}): EMFILE: RLIMIT_MSGQUEUE (ulimit -q) is used up"),
        errno => anyhow!("mq_open({name}): {errno}"),
    }
}

/// A limit of this system from /proc/sys/fs/mqueue (`msg_max`, `msgsize_max`,
/// `queues_max`); `i64::MAX` if it cannot be read.
///
/// # References: mq_overview(7) "/proc interfaces"
pub fn limit(file: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}")).unwrap_or_default();
    text.trim().parse().unwrap_or(i64::MAX)
}

/// `mq_receive` into `buffer`, for a receiver whose messages may never come: it waits in
/// poll(2) — on Linux a queue descriptor is a file descriptor — and gives up with
/// `trouble`'s message as soon as it returns one (asked every 100 ms while the queue is
/// empty), or when a stop signal arrives. Returns the message's length.
///
/// # References: mq_receive(3), mq_overview(7) "Polling message queue descriptors"
pub fn receive_unless(
    queue: &MqdT,
    buffer: &mut [u8],
    mut trouble: impl FnMut() -> Option<String>,
) -> anyhow::Result<usize> {
    while !signals::wait_readable(Some(queue.as_fd()), Duration::from_millis(100)) {
        signals::bail_if_stopped()?;
        if let Some(message) = trouble() {
            anyhow::bail!(message);
        }
    }
    mq_receive(queue, buffer, &mut 0).context("mq_receive")
}

/// `n` and `word`, plural unless `n` is 1: "1 consumer", "2 consumers".
pub fn counted(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `--message-size` of mq_vs_pipe: a record (28 bytes at least) that a queue takes
/// (msgsize_max) and whose frame, with its 4-byte length, fits in one atomic pipe write
/// (PIPE_BUF); the error names the real range.
///
/// # References: pipe(7) "PIPE_BUF", mq_overview(7)
pub fn message_size(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|_| format!("not a number: {text}"))?;
    let msgsize_max = usize::try_from(limit("msgsize_max")).unwrap_or(usize::MAX);
    let most = (libc::PIPE_BUF - 4).min(msgsize_max); // a frame in one write; the queue's limit
    if !(crate::record::MIN_SIZE..=most).contains(&size) {
        return Err(format!(
            "{size} is not between {} and {most} bytes (PIPE_BUF, and \
             /proc/sys/fs/mqueue/msgsize_max = {msgsize_max})",
            crate::record::MIN_SIZE
        ));
    }
    Ok(size)
}

/// Why a receiver should give up: a producer that has ended (no longer running) with fewer
/// than its `messages` received (`got`, per producer, in the order of `producers`).
///
/// # References: proc_pid_stat(5) (the state read), mq_receive(3) (which would wait for ever)
pub fn lost(producers: &[Spawned], got: &[u64], messages: u64) -> Option<String> {
    let mut pairs = producers.iter().zip(got);
    let (producer, n) = pairs.find(|(it, n)| **n < messages && !running(it.pid.as_raw()))?;
    Some(format!(
        "producer {} ended after {n} of its {messages} messages: giving up",
        producer.pid
    ))
}

/// Narrates `mq_open` for a queue created as mqueue writes it out (O_CREAT | O_EXCL |
/// O_RDWR, 0600), with `then` after the call ("" or ", then mq_unlink").
///
/// # References: mq_open(3)
pub fn say_opened(name: &str, capacity: i64, size: usize, then: &str) {
    event("mq_open")
        .field("name", name)
        .field("max_messages", capacity)
        .field("message_size", size)
        .say(format!(
            "mq_open({name}, O_CREAT | O_EXCL | O_RDWR, 0600, {{maxmsg {capacity}, msgsize {size}}}){then}"
        ));
}

/// Narrates mqueue's `forked`: the pids of the consumers and of the producers.
pub fn say_forked(consumers: &[Spawned], producers: &[Spawned]) {
    let pids = |of: &[Spawned]| -> Vec<i32> { of.iter().map(|child| child.pid.as_raw()).collect() };
    let (c, p) = (consumers.len() as u64, producers.len() as u64);
    let (consumers_said, producers_said) = (counted(c, "consumer"), counted(p, "producer"));
    event("forked")
        .field("consumers", pids(consumers))
        .field("producers", pids(producers))
        .say(format!("forked {consumers_said} and {producers_said}"));
}

/// Narrates mqueue's `summary`: the tally of `account`, the messages `left` in the queue
/// (mq_getattr's mq_curmsgs) and the rate over `seconds`.
pub fn say_mqueue_summary(producers: u32, consumers: u32, tally: Tally, left: i64, seconds: f64) {
    let (sent, received, in_order) = (tally.sent, tally.received, tally.in_order);
    let (once, rate) = (tally.exactly_once(), received as f64 / seconds);
    event("summary")
        .field("producers", producers)
        .field("consumers", consumers)
        .fields(tally)
        .field("order_ok", in_order)
        .field("left_in_queue", left)
        .field("messages_per_s", rate)
        .say(format!(
            "summary: sent {sent}, received {received} exactly once: {once}; order kept per \
             producer: {in_order}; left in queue: {left}; {rate:.0} messages/s"
        ));
}

/// mq_vs_pipe's rates, per round, through the queue and through the pipe.
#[derive(Default)]
pub struct Rates {
    pub queue: Vec<f64>,
    pub pipe: Vec<f64>,
}

impl Rates {
    /// Notes one round and narrates it (`pipe`, with the pipe's count `piped`).
    pub fn note(&mut self, round: usize, queue: f64, pipe: f64, piped: u64) {
        let said = format!(
            "round {round}: {queue:.0} messages/s through the queue, {pipe:.0} through a pipe"
        );
        let measured = json!({"round": round, "messages_per_s": pipe, "received": piped});
        let measured = event("pipe").fields(measured);
        measured.field("queue_messages_per_s", queue).say(said);
        self.queue.push(queue);
        self.pipe.push(pipe);
    }

    /// Narrates mq_vs_pipe's `summary`: the last round's tally, whether every round was
    /// exactly once, the messages `left` in the queue, and the medians of the rounds.
    pub fn say_summary(self, tally: Tally, once: bool, left: i64, producers: u32) {
        let (rate, pipe_rate) = (median(&self.queue), median(&self.pipe));
        let (received, rounds) = (tally.received, self.queue.len());
        let said = format!(
            "summary: each round received {received} exactly once: {once}; left in queue: \
            {left}; medians of {rounds}: {rate:.0} messages/s through the queue, {pipe_rate:.0} through a \
            pipe: {}",
            crate::measure::compared("the queue", rate, pipe_rate)
        );
        let rates = json!({"rounds": rounds, "messages_per_s": rate, "pipe_messages_per_s": pipe_rate,
            "queue_rates": self.queue, "pipe_rates": self.pipe, "queue_vs_pipe": rate / pipe_rate,
            "producers": producers, "consumers": 1, "left_in_queue": left});
        let summary = event("summary").fields(tally).fields(rates);
        summary.field("every_round_exactly_once", once).say(said);
    }
}

/// Narrates mq_priorities' `hold`: the full queue is kept, name and all, for a look.
pub fn say_holding(name: &str, hold: Duration) {
    let seconds = hold.as_secs_f64();
    event("hold")
        .field("name", name)
        .field("seconds", seconds)
        .say(format!(
            "holding it {seconds}s: with /dev/mqueue mounted, cat /dev/mqueue{name}"
        ));
}

/// Narrates mq_priorities' `summary`: the messages `received` as (seq, priority) in the
/// order they came out, against the `sent` messages of `size` bytes: each exactly once,
/// in priority order (`priority_order_ok`), each with the priority `sent_with` gave it;
/// `left` in the queue.
pub fn say_priorities_summary(
    received: &[(u64, u32)],
    (sent, size): (u64, usize),
    priority_order_ok: bool,
    sent_with: impl Fn(u64) -> u32,
    left: i64,
) {
    let mut ledger = Ledger::new();
    for &(seq, _) in received {
        ledger.note(&Found::Record(Tag { writer: 0, seq }, size));
    }
    let mut tally = ledger.check(&[sent]);
    tally.in_order = priority_order_ok; // the order a priority queue promises
    let priorities_kept = received
        .iter()
        .all(|&(seq, priority)| priority == sent_with(seq));
    event("summary")
        .field("producers", 1)
        .field("consumers", 1)
        .fields(tally)
        .field("order_ok", priority_order_ok)
        .field("priorities_kept", priorities_kept)
        .field("priority_order_ok", priority_order_ok)
        .field("left_in_queue", left)
        .say(format!(
            "summary: {} messages out, highest priority first and FIFO within a priority: {priority_order_ok}",
            tally.received
        ));
}

/// Narrates mq_full's `mq_open`: the queue (opened O_RDONLY to receive, then O_WRONLY to
/// send, and unlinked) and the system's limits, read from /proc/sys/fs/mqueue.
pub fn say_opened_within_limits(name: &str, capacity: i64, size: usize) {
    let [msg_max, msgsize_max, queues_max] = ["msg_max", "msgsize_max", "queues_max"].map(limit);
    let limits = json!({"msg_max": msg_max, "msgsize_max": msgsize_max, "queues_max": queues_max});
    let said = format!(
        "mq_open({name}, O_CREAT | O_EXCL, 0600, {{maxmsg {capacity}, msgsize \
        {size}}}), then mq_unlink; limits in /proc/sys/fs/mqueue: msg_max {msg_max}, \
        msgsize_max {msgsize_max}, queues_max {queues_max}"
    );
    let opened = json!({"name": name, "max_messages": capacity, "message_size": size,
                        "limits": limits});
    event("mq_open").fields(opened).say(said);
}

/// Narrates mq_full's `producer_state`: what /proc said of a producer once the queue was
/// full (its state, and `place`, the kernel function it sleeps in, from wchan). A task that
/// is not asleep has no wait channel (wchan reads `0`): the line then names none.
pub fn say_producer_state(producer: i32, state: char, place: &str) {
    let channel = match place {
        "" | "0" => String::new(), // running (or runnable): it waits for nothing
        place => format!(" (wchan {place})"),
    };
    let said = format!(
        "kernel says producer {producer} is {state} ({}){channel}",
        crate::inspect::state_word(state)
    );
    let observed = json!({"producer": producer, "state": state.to_string(), "wchan": place});
    event("producer_state").fields(observed).say(said);
}

/// Narrates mq_full's `summary`: the tally of `producers` × their messages, what is `left`
/// in the queue, the sends that found it full (`full_waits`) and the EAGAINs.
pub fn say_full_summary(producers: u32, tally: Tally, left: i64, (full_waits, eagain): (u64, u64)) {
    let (sent, received, once) = (tally.sent, tally.received, tally.exactly_once());
    let said = format!(
        "summary: sent {sent}, received {received} exactly once: {once}; left in \
        queue: {left}; sends that found the queue full: {full_waits}; EAGAIN: {eagain}"
    );
    event("summary")
        .fields(json!({"producers": producers, "consumers": 1}))
        .fields(tally)
        .fields(json!({"left_in_queue": left, "full_waits": full_waits, "eagain": eagain}))
        .say(said);
}

// ANCHOR: account
/// Accounts for what the consumers received (one list of tags each, messages of `size`
/// bytes) against `sent` (per producer): each message exactly once (one ledger for all);
/// in order per producer (one ledger per consumer).
///
/// # References: mq_overview(7) (a queue keeps the order of one priority)
pub fn account(received: &[Vec<Tag>], sent: &[u64], size: usize) -> Tally {
    let (mut all, mut order_ok) = (Ledger::new(), true);
    for consumer in received {
        let mut own = Ledger::new();
        for &tag in consumer {
            all.note(&Found::Record(tag, size));
            own.note(&Found::Record(tag, size));
        }
        order_ok &= own.in_order; // across consumers there is no common order to check
    }
    let mut tally = all.check(sent);
    tally.in_order = order_ok;
    tally
}
// ANCHOR_END: account
