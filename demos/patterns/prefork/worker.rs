//! worker — a prefork worker: wait for a connection, answer its one request, close it.
//!
//! Demonstrates: a worker forked with the listening socket takes connections with
//! accept(2) — when several wait there, the kernel wakes one per connection — or
//! receives them from the master with recvmsg(2); it ignores the group's Ctrl-C and
//! SIGHUP (the master's business) and takes SIGTERM as "finish and leave".
//! Run:     cargo run --bin prefork -- --workers 2     (then: cat /proc/<worker>/wchan)
//! Observe: an idle worker sleeps in inet_csk_accept, and beats its heartbeat 4 times a second.
//! Book:    book/src/patterns/prefork.md

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{SockFlag, accept4, setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use proclab::narrate::event;
use proclab::signals;

use crate::dispatch::receive_connection;
use crate::http::{self, Deadlines, Route};
use crate::scoreboard::Scoreboard;

// ANCHOR: work
/// In the new worker: its connections come from its own end of a Unix socket to the
/// master (`channel`: the master's end, which it closes, and its own), or else from the
/// shared `listener`; none of either: the server is stopping.
pub fn start(
    slot: usize,
    board: &Scoreboard,
    channel: Option<(OwnedFd, OwnedFd)>,
    listener: Option<&OwnedFd>,
    deadlines: Deadlines,
) -> anyhow::Result<i32> {
    match (channel, listener) {
        (Some((master_end, worker_end)), _) => {
            drop(master_end); // or it would never see end-of-file on its own
            setsockopt(&worker_end, sockopt::ReceiveTimeout, &heartbeat())?;
            work(slot, board, Source::Channel(&worker_end), deadlines)
        }
        (None, Some(listener)) => work(slot, board, Source::Listener(listener), deadlines),
        (None, None) => Ok(0), // the server is stopping
    }
}

/// The worker's life: get ready, then take connections until told to leave — the
/// listening socket shut down or the master's end of the channel closed (the server is
/// stopping or replacing this worker), or SIGTERM.
fn work(
    slot: usize,
    board: &Scoreboard,
    source: Source,
    deadlines: Deadlines,
) -> anyhow::Result<i32> {
    // Only the master decides when workers stop: Ctrl-C (sent to the whole process group)
    // and SIGHUP are the master's business; SIGTERM means "finish and leave".
    signals::catch(Signal::SIGTERM)?;
    for ignored in [Signal::SIGINT, Signal::SIGHUP] {
        signals::ignore(ignored)?;
    }
    for signal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM] {
        signals::set_blocked(signal, false)?; // blocked by the master across fork
    }
    event("ready").field("slot", slot).say(match source {
        Source::Listener(_) => format!("slot {slot} ready: accept() on the shared socket"),
        Source::Channel(_) => format!("slot {slot} ready: recvmsg() on its Unix socket"),
    });
    // After the line: the master may act on the board at once (retire the next slot of a
    // rolling restart), and the timeline must show the cause before its effect.
    board.ready(slot, std::process::id());
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
                serve(connection, slot, board, deadlines);
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
/// Answers the one HTTP request of `connection`, then closes it. A client that goes away
/// or says nothing in time is the client's problem, not the worker's: nothing is counted.
fn serve(connection: OwnedFd, slot: usize, board: &Scoreboard, deadlines: Deadlines) {
    let stream = TcpStream::from(connection);
    let Some(head) = http::read_head(&stream, deadlines) else {
        return; // closed, reset, too long, or too slow (an idle connection: dropped)
    };
    let reply = answer(&head, slot, board);
    if (&stream).write_all(reply.as_bytes()).is_ok() {
        board.count_served(slot);
    }
} // the stream is closed here: the client reads end-of-file after the reply
// ANCHOR_END: serve

/// The routes: `GET /echo/<tag>` → `<tag> worker <slot> pid <pid>`; `GET /slow/<ms>/<tag>`
/// the same after `ms` milliseconds (at most a minute); `GET /status` the scoreboard.
fn answer(head: &str, slot: usize, board: &Scoreboard) -> String {
    let pid = std::process::id();
    let text = "text/plain";
    match http::route(head) {
        Route::Echo(tag) => {
            http::reply("200 OK", text, &format!("{tag} worker {slot} pid {pid}\n"))
        }
        Route::Slow(ms, tag) => {
            // (std's sleep goes back to sleep after a signal interrupts it)
            std::thread::sleep(Duration::from_millis(ms));
            http::reply("200 OK", text, &format!("{tag} worker {slot} pid {pid}\n"))
        }
        Route::Status => {
            let status =
                serde_json::json!({ "worker": slot, "pid": pid, "rows": board.snapshot() });
            http::reply("200 OK", "application/json", &format!("{status}\n"))
        }
        Route::BadSlow => http::reply(
            "400 Bad Request",
            text,
            "slow takes milliseconds, 0 to 60000\n",
        ),
        Route::NotFound => http::reply("404 Not Found", text, NOT_FOUND),
    }
}

/// What a request for anything else gets.
pub const NOT_FOUND: &str = "requests are: GET /echo/<tag>, GET /slow/<ms>/<tag>, GET /status\n";

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

/// An undefended server waits this long for a whole request head, however slowly it
/// trickles: a one-connection-at-a-time worker must not be held for ever ("slowloris").
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// With the idle defence: a connection must bring its first bytes within this.
pub const FIRST_BYTE_DEADLINE: Duration = Duration::from_millis(200);
