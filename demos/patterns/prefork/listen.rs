//! listen — prefork's listening socket, made by the master before any worker exists.
//!
//! Demonstrates: the four calls behind `TcpListener::bind` — socket(2), setsockopt(2)
//! SO_REUSEADDR, bind(2), listen(2) — and why every worker forked afterwards shares the
//! one socket they make: the same open file description, the same queue of connections.
//! Run:     cargo run --bin prefork -- --port 8080     (a second one: "port 8080 is in use")
//! Observe: `ss -ltnp 'sport = :8080'` lists one socket held by the master and every worker.
//! Book:    book/src/patterns/prefork.md

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, listen, setsockopt, socket, sockopt,
};

use proclab::narrate::event;
use proclab::queues::counted;

use crate::http::IdleDefence;
use crate::options::{Dispatch, Server};
use crate::worker::heartbeat;

// ANCHOR: listen
/// Makes the TCP socket that listens on 127.0.0.1:`port`; returns it and the port it got
/// (the kernel chooses one for `port` 0).
///
/// # References: socket(2), setsockopt(2) SO_REUSEADDR, bind(2), listen(2), ip(7)
pub fn listen_on(
    port: u16,
    dispatch: Dispatch,
    defence: IdleDefence,
) -> anyhow::Result<(OwnedFd, u16)> {
    let listener = socket(
        AddressFamily::Inet,    // IPv4
        SockType::Stream,       // TCP: a byte stream, connections
        SockFlag::SOCK_CLOEXEC, // not inherited by a program exec'd later
        None,                   // the protocol: the only one for stream sockets, TCP
    )
    .context("socket(AF_INET, SOCK_STREAM)")?;
    // A restarted server may bind the port while connections of the last one are still
    // in TIME_WAIT (as TcpListener::bind does too).
    setsockopt(
        &listener,          // the socket
        sockopt::ReuseAddr, // SOL_SOCKET, SO_REUSEADDR
        &true,              // on
    )
    .context("setsockopt(SO_REUSEADDR)")?;
    bind_loopback(&listener, port)?;
    if defence == IdleDefence::On {
        defer_accept(&listener)?;
    }
    listen(
        &listener,          // the socket: from now on the kernel queues connections for it
        Backlog::new(128)?, // at most 128 complete ones waiting for accept() (as std's)
    )
    .context("listen")?;
    let port = local_port(&listener)?; // --port 0: the one the kernel chose
    match dispatch {
        // Workers block in accept(), but wake up every HEARTBEAT_EVERY to say they live.
        Dispatch::SharedAccept => setsockopt(&listener, sockopt::ReceiveTimeout, &heartbeat())?,
        // Only the master accepts, when poll() says a connection is waiting.
        _ => drop(fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?),
    }
    Ok((listener, port))
}
// ANCHOR_END: listen

// ANCHOR: defer_accept
/// The defence against idle connections (Apache's `AcceptFilter http data` on Linux): a
/// connection whose client has sent nothing stays in the kernel, its handshake left
/// unfinished, and never reaches accept() — so it cannot hold a worker. After
/// DEFER_SECONDS the kernel lets it through anyway; then the worker's first-byte
/// deadline drops it.
///
/// # References: tcp(7) TCP_DEFER_ACCEPT, setsockopt(2)
fn defer_accept(listener: &OwnedFd) -> anyhow::Result<()> {
    let seconds: libc::c_int = DEFER_SECONDS;
    // SAFETY: the option's value is a c_int, passed with its size; setsockopt reads it only.
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),                        // the listening socket
            libc::IPPROTO_TCP,                           // a TCP option, not a socket one
            libc::TCP_DEFER_ACCEPT,                      // wake accept() only for data
            (&raw const seconds).cast::<libc::c_void>(), // for at most this many seconds
            size_of::<libc::c_int>() as libc::socklen_t, // the value's size
        )
    };
    Errno::result(result).context("setsockopt(TCP_DEFER_ACCEPT)")?;
    Ok(())
}
// ANCHOR_END: defer_accept

/// How long the kernel holds back a connection that has sent nothing (rounded up by the
/// kernel to its SYN-ACK retransmissions: 1 + 2 + 4 = 7 s).
const DEFER_SECONDS: libc::c_int = 5;

// ANCHOR: bind
/// `bind(listener, 127.0.0.1:port)`. The address is a `sockaddr_in`, written out: its
/// numbers in network byte order (big-endian), as the kernel expects them.
fn bind_loopback(listener: &OwnedFd, port: u16) -> anyhow::Result<()> {
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(), // htons(port)
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(), // htonl(INADDR_LOOPBACK)
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `address` is a valid sockaddr_in for the length passed; bind reads it only.
    let result = unsafe {
        libc::bind(
            listener.as_raw_fd(),                              // the socket
            (&raw const address).cast::<libc::sockaddr>(),     // the address…
            size_of::<libc::sockaddr_in>() as libc::socklen_t, // …and its size
        )
    };
    match Errno::result(result) {
        Ok(_) => Ok(()),
        Err(Errno::EADDRINUSE) => {
            let error = std::io::Error::from_raw_os_error(Errno::EADDRINUSE as i32);
            bail!("port {port} is in use on 127.0.0.1 ({error}): choose another, or --port 0")
        }
        Err(error) => Err(error).context(format!("bind 127.0.0.1:{port}")),
    }
}
// ANCHOR_END: bind

/// The port the socket is bound to, from `getsockname(2)`.
fn local_port(listener: &OwnedFd) -> anyhow::Result<u16> {
    // SAFETY: sockaddr_in is plain data; all zeros is a valid value of it.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `length` bytes into `address`, and the new length.
    let result = unsafe {
        libc::getsockname(
            listener.as_raw_fd(),                        // the socket
            (&raw mut address).cast::<libc::sockaddr>(), // where to write the address
            &mut length,                                 // its room; then its size
        )
    };
    Errno::result(result).context("getsockname")?;
    Ok(u16::from_be(address.sin_port)) // ntohs
}

/// The `listening` event: the port, and how to reach the server.
pub fn say_listening(server: &Server, port: u16) {
    let hint = if server.self_test {
        String::new()
    } else {
        format!(
            " -- try: prefork client --port {port} (Ctrl-C, SIGTERM: stop; SIGHUP: new workers)"
        )
    };
    let defence = server.idle_defence();
    event("listening")
        .field("port", port)
        .field("workers", server.workers)
        .field("dispatch", server.dispatch)
        .field("idle_defence", defence == IdleDefence::On)
        .say(format!(
            "listening on 127.0.0.1:{port}; {}, {} dispatch, idle defence {}{hint}",
            counted(server.workers, "worker"),
            server.dispatch.name(),
            defence.name()
        ));
}
