//! dispatch — how the prefork master passes a connection to a worker (SCM_RIGHTS).
//!
//! Demonstrates: in --dispatch round-robin and least-loaded only the master accepts;
//! it sends the connection's file descriptor to a worker over that worker's Unix socket
//! in an SCM_RIGHTS message, and the kernel installs a new descriptor for the same
//! socket in the worker.
//! Run:     cargo run --bin prefork -- --self-test --dispatch least-loaded
//! Observe: `ls -l /proc/<worker>/fd`: a Unix socket, no listening socket.
//! Book:    book/src/patterns/prefork.md

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::Master;
use crate::options::Dispatch;

/// What the master's passing of connections keeps.
#[derive(Default)]
pub struct Handoff {
    /// Round-robin's next slot.
    turn: usize,
    /// Connections the master accepted but could pass to no worker.
    pub dropped: u64,
}

/// round-robin, least-loaded: a new worker's Unix socket to the master (the master's end,
/// the worker's end); shared-accept: none.
pub fn channel(dispatch: Dispatch) -> nix::Result<Option<(OwnedFd, OwnedFd)>> {
    if dispatch == Dispatch::SharedAccept {
        return Ok(None);
    }
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket, // messages, and end-of-file when the master closes
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map(Some)
}

impl Master<'_> {
    // ANCHOR: dispatch
    /// round-robin and least-loaded: accepts every waiting connection and passes each to
    /// a worker; the master's own copy closes at the end of each turn of the loop.
    pub fn dispatch(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(listener) = &self.listener else {
                return Ok(());
            };
            let connection = match crate::worker::accept(listener) {
                Ok(connection) => connection,
                Err(Errno::EAGAIN) => return Ok(()), // none left waiting
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(error) => return Err(error).context("accept"),
            };
            let mut passed = false;
            for slot in self.candidates() {
                let channel = self.supervisor.slots[slot]
                    .as_ref()
                    .and_then(|w| w.channel.as_ref());
                let Some(channel) = channel else { continue };
                self.board.add_active(slot, 1); // before the worker can count it done
                if pass_connection(channel, &connection).is_ok() {
                    self.handoff.turn = slot + 1;
                    passed = true;
                    break;
                }
                self.board.add_active(slot, -1); // its socket is full, or it just died
            }
            self.handoff.dropped += u64::from(!passed);
        }
    }

    /// The ready workers, in the order the dispatch mode prefers them: by turn from
    /// round-robin's next slot; least-loaded sorts that by connections held.
    fn candidates(&self) -> Vec<usize> {
        let slots = self.supervisor.slots.len();
        let mut order: Vec<usize> = (0..slots)
            .map(|i| (self.handoff.turn + i) % slots)
            .filter(|&slot| self.ready(slot))
            .collect();
        if self.server.dispatch == Dispatch::LeastLoaded {
            order.sort_by_key(|&slot| self.board.active(slot)); // stable: ties by turn
        }
        order
    }
    // ANCHOR_END: dispatch

    /// The master accepts connections itself (to pass them on) only when dispatching,
    /// not stopping, and some worker is ready to take one.
    pub fn accepting(&self) -> bool {
        self.server.dispatch != Dispatch::SharedAccept
            && self.stop.is_none()
            && (0..self.supervisor.slots.len()).any(|slot| self.ready(slot))
    }
}

// ANCHOR: pass
/// Master: passes `connection` to a worker over its Unix socket. The data is one byte;
/// the descriptor travels beside it, in an SCM_RIGHTS control message. The kernel
/// installs a new descriptor for the same socket in the worker when it receives it, so
/// the master may close its own as soon as this returns.
///
/// # References: unix(7) SCM_RIGHTS, sendmsg(2), cmsg(3)
fn pass_connection(channel: &OwnedFd, connection: &OwnedFd) -> nix::Result<()> {
    let fds = [connection.as_raw_fd()];
    let sent = sendmsg::<()>(
        channel.as_raw_fd(),                             // the worker's Unix socket
        &[IoSlice::new(b"c")],                           // the data: one byte
        &[ControlMessage::ScmRights(&fds)],              // beside it, the descriptor
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, // a full socket: EAGAIN; no SIGPIPE
        None,                                            // connected: no address
    )?;
    debug_assert_eq!(sent, 1);
    Ok(())
}

/// Worker: receives the next connection the master passes, or `None` when the master
/// has closed its end (SOCK_SEQPACKET reports that as end-of-file once the messages
/// already sent have been read). EAGAIN after the socket's SO_RCVTIMEO, EINTR on a signal.
///
/// # References: unix(7) SCM_RIGHTS, recvmsg(2)
pub fn receive_connection(channel: &OwnedFd) -> nix::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut data = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        channel.as_raw_fd(),        // its end of the Unix socket
        &mut data,                  // room for the one byte
        Some(&mut space),           // room for one descriptor
        MsgFlags::MSG_CMSG_CLOEXEC, // the new descriptor is close-on-exec
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
