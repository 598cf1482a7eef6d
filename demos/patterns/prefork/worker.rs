//! worker — a prefork worker: wait for a connection, answer its one request, close it.
//!
//! Demonstrates: a worker forked with the listening socket takes connections with
//! accept(2) — when several wait there, the kernel wakes one per connection — or
//! receives them from the master with recvmsg(2); it ignores the group's Ctrl-C and
//! SIGHUP (the master's business) and takes SIGTERM as "finish and leave".
//! Run:     cargo run --bin prefork -- --workers 2     (then: cat /proc/<worker>/wchan)
//! Observe: an idle worker sleeps in inet_csk_accept, and beats its heartbeat 4 times a second.
//! Book:    book/src/patterns/prefork.md

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{SockFlag, accept4, setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use proclab::narrate::event;
use proclab::signals;

use crate::dispatch::receive_connection;
use crate::scoreboard::{self, Scoreboard};

// ANCHOR: work
/// In the new worker: its connections come from its own end of a Unix socket to the
/// master (`channel`: the master's end, which it closes, and its own), or else from the
/// shared `listener`; none of either: the server is stopping.
pub fn start(
    slot: usize,
    board: &Scoreboard,
    channel: Option<(OwnedFd, OwnedFd)>,
    listener: Option<&OwnedFd>,
) -> anyhow::Result<i32> {
    match (channel, listener) {
        (Some((master_end, worker_end)), _) => {
            drop(master_end); // or it would never see end-of-file on its own
            setsockopt(&worker_end, sockopt::ReceiveTimeout, &heartbeat())?;
            work(slot, board, Source::Channel(&worker_end))
        }
        (None, Some(listener)) => work(slot, board, Source::Listener(listener)),
        (None, None) => Ok(0), // the server is stopping
    }
}

/// The worker's life: get ready, then take connections until told to leave — the
/// listening socket shut down or the master's end of the channel closed (the server is
/// stopping or replacing this worker), or SIGTERM.
fn work(slot: usize, board: &Scoreboard, source: Source) -> anyhow::Result<i32> {
    // Only the master decides when workers stop: Ctrl-C (sent to the whole process group)
    // and SIGHUP are the master's business; SIGTERM means "finish and leave".
    signals::catch(Signal::SIGTERM)?;
    for ignored in [Signal::SIGINT, Signal::SIGHUP] {
        signals::ignore(ignored)?;
    }
    for signal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM] {
        signals::set_blocked(signal, false)?; // blocked by the master across fork
    }
    let pid = std::process::id();
    board.ready(slot, pid);
    event("ready").field("slot", slot).say(match source {
        Source::Listener(_) => format!("slot {slot} ready: accept() on the shared socket"),
        Source::Channel(_) => format!("slot {slot} ready: recvmsg() on its Unix socket"),
    });
    while signals::count(Signal::SIGTERM) == 0 {
        let next = match source {
            Source::Listener(listener) => accept(listener).map(Some),
            Source::Channel(channel) => receive_connection(channel),
        };
        match next {
            Ok(Some(connection)) => {
                if let Source::Listener(_) = source {
                    board.add_active(slot, 1); // (the master counted a passed one)
                }
                serve(connection, slot, board);
                board.add_active(slot, -1);
            }
            Ok(None) => break,           // the master closed the channel: leave
            Err(Errno::EINVAL) => break, // the listening socket was shut down: leave
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => {} // time to beat
            Err(error) => anyhow::bail!("waiting for a connection: {error}"),
        }
        board.beat(slot);
    }
    Ok(0)
}
// ANCHOR_END: work

/// `accept4(listener)`: blocks until a client connects, the listening socket is shut
/// down (EINVAL), a signal comes (EINTR: no SA_RESTART) or SO_RCVTIMEO passes (EAGAIN).
/// When several workers wait here, the kernel wakes one of them per connection.
///
/// # References: accept(2)
pub fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ANCHOR: serve
/// Answers the one request of `connection`, then closes it. A client that goes away or
/// says nothing is the client's problem, not the worker's: nothing is counted.
fn serve(connection: OwnedFd, slot: usize, board: &Scoreboard) {
    let stream = TcpStream::from(connection);
    let Some(line) = read_request(&stream) else {
        return; // closed, reset, too long, or too slow
    };
    let reply = answer(line.trim_end(), slot, board);
    if (&stream).write_all(reply.as_bytes()).is_ok() {
        board.count_served(slot);
    }
} // the stream is closed here: the client reads end-of-file after the reply
// ANCHOR_END: serve

/// Reads the request line: at most MAX_LINE bytes, all within REQUEST_DEADLINE.
fn read_request(mut stream: &TcpStream) -> Option<String> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut line = Vec::new();
    let mut buffer = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < MAX_LINE {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buffer) {
            Ok(0) => return None,
            Ok(read) => line.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None, // reset, or the deadline passed
        }
    }
    let end = line.iter().position(|&byte| byte == b'\n')?;
    String::from_utf8(line[..end].to_vec()).ok()
}

/// The protocol: one request line, one reply.
/// - `ECHO <tag>` → `<tag> worker <slot> pid <pid>`
/// - `SLOW <ms> <tag>` → the same, after sleeping `ms` milliseconds (at most a minute)
/// - `STATUS` → the scoreboard, as a table
fn answer(request: &str, slot: usize, board: &Scoreboard) -> String {
    let pid = std::process::id();
    let words: Vec<&str> = request.split_whitespace().collect();
    match words.as_slice() {
        ["ECHO", tag] => format!("{tag} worker {slot} pid {pid}\n"),
        ["SLOW", ms, tag] => match ms.parse::<u64>() {
            Ok(ms) if ms <= 60_000 => {
                // (std's sleep goes back to sleep after a signal interrupts it)
                std::thread::sleep(Duration::from_millis(ms));
                format!("{tag} worker {slot} pid {pid}\n")
            }
            _ => "ERROR SLOW takes milliseconds, 0 to 60000\n".to_owned(),
        },
        ["STATUS"] => format!(
            "STATUS from worker {slot} pid {pid}\n{}",
            scoreboard::table(&board.snapshot())
        ),
        _ => "ERROR requests are: ECHO <tag>, SLOW <ms> <tag>, STATUS\n".to_owned(),
    }
}

/// HEARTBEAT_EVERY, for SO_RCVTIMEO: a wait for a connection ends after it (EAGAIN).
pub fn heartbeat() -> TimeVal {
    TimeVal::milliseconds(HEARTBEAT_EVERY.as_millis() as i64)
}

/// Where a worker's connections come from.
enum Source<'a> {
    /// The listening socket itself, shared by every worker.
    Listener(&'a OwnedFd),
    /// The worker's end of its Unix socket to the master.
    Channel(&'a OwnedFd),
}

/// How often an idle worker wakes up to beat its heartbeat (SO_RCVTIMEO).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// A request line may be at most this long.
const MAX_LINE: usize = 1024;
/// A client has this long to send its whole request line, however it trickles it: a
/// one-connection-at-a-time worker must not be held for ever (the "slowloris" attack).
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
