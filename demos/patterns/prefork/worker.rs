//! A prefork worker: wait for a connection, answer its one request, close it, repeat.
//!
//! Where the connection comes from is the dispatch mode: `accept()` on the listening
//! socket every worker inherited (shared-accept), or `recvmsg()` on the worker's own Unix
//! socket, over which the master passes connections it accepted (SCM_RIGHTS).

use std::io::{IoSlice, IoSliceMut};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, accept4, recvmsg, sendmsg,
};
use proclab::narrate::event;
use proclab::signals;

use crate::scoreboard::{self, Scoreboard};

/// Where a worker's connections come from.
pub enum Source<'a> {
    /// The listening socket itself, shared by every worker.
    Listener(&'a OwnedFd),
    /// The worker's end of its Unix socket to the master.
    Channel(&'a OwnedFd),
}

/// A request line may be at most this long.
const MAX_LINE: usize = 1024;
/// A client has this long to send its whole request line, however it trickles it: a
/// one-connection-at-a-time worker must not be held for ever (the "slowloris" attack).
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

// ANCHOR: work
/// The worker's life: get ready, then take connections until told to leave — the
/// listening socket shut down or the master's end of the channel closed (the server is
/// stopping or replacing this worker), or SIGTERM.
pub fn work(slot: usize, board: &Scoreboard, source: Source) -> anyhow::Result<i32> {
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

// ANCHOR: pass
/// Master: passes `connection` to a worker over its Unix socket. The data is one byte;
/// the descriptor travels beside it, in an SCM_RIGHTS control message. The kernel
/// installs a new descriptor for the same socket in the worker when it receives it, so
/// the master may close its own as soon as this returns.
///
/// # References: unix(7) SCM_RIGHTS, sendmsg(2), cmsg(3)
pub fn pass_connection(channel: &OwnedFd, connection: &OwnedFd) -> nix::Result<()> {
    let fds = [connection.as_raw_fd()];
    let sent = sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"c")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    debug_assert_eq!(sent, 1);
    Ok(())
}

/// Worker: receives the next connection the master passes, or `None` when the master
/// has closed its end (SOCK_SEQPACKET reports that as end-of-file once the messages
/// already sent have been read). EAGAIN after the socket's SO_RCVTIMEO, EINTR on a signal.
///
/// # References: unix(7) SCM_RIGHTS, recvmsg(2)
fn receive_connection(channel: &OwnedFd) -> nix::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut data = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut data,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if message.bytes == 0 {
        return Ok(None); // end of file: the master closed its end
    }
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in this process for us.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Err(Errno::EBADMSG) // a message without a descriptor: the master never sends one
}
// ANCHOR_END: pass

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
