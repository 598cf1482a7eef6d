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

use crate::signals;

/// Creates the queue `name`, exclusively (EEXIST if it exists), mode 0600, for reading
/// and writing, holding `capacity` messages of at most `size` bytes. The attributes are
/// always given: without them nix passes garbage and the kernel answers EINVAL.
///
/// # References: mq_open(3), mq_overview(7)
pub fn create(name: &str, capacity: i64, size: usize) -> anyhow::Result<MqdT> {
    let attr = MqAttr::new(0, capacity, size as i64, 0);
    let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
    mq_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr)).map_err(|errno| match errno {
        Errno::EMFILE => anyhow!("mq_open({name}): EMFILE: RLIMIT_MSGQUEUE (ulimit -q) is used up"),
        errno => anyhow!("mq_open({name}): {errno}"),
    })
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
