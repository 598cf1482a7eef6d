//! queues — plumbing of the POSIX message-queue programs (mqueue, mq_priorities, mq_full,
//! mq_vs_pipe).
//!
//! mqueue writes out `mq_open` with its flags, mode and attributes; the programs after it
//! create their private queue with [`create`]. The kernel's limits, a receive that notices
//! a partner's death, and a count with its plural are here so that each program shows
//! only its own lesson.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_open, mq_receive};
use nix::sys::stat::Mode;

use crate::child::Spawned;
use crate::inspect::running;
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

/// Which of two rates was higher, and by how much, in words: `compared("the queue", 1.0,
/// 4.0)` is "the queue was 4.0× slower"; within 5% it is "as fast".
pub fn compared(what: &str, rate: f64, other: f64) -> String {
    match rate / other {
        ratio if (0.95..=1.05).contains(&ratio) => format!("{what} was as fast, within 5%"),
        ratio if ratio < 1.0 => format!("{what} was {:.1}× slower", 1.0 / ratio),
        ratio => format!("{what} was {ratio:.1}× faster"),
    }
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
