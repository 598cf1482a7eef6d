//! idle — prefork client --idle N: connections that connect and then say nothing.
//!
//! Demonstrates: the classic weakness of a prefork server: a worker serves one connection
//! at a time, so a client that connects and sends nothing holds a whole worker until the
//! worker gives up on it. N such connections (reopened when dropped) against W <= N
//! workers starve everyone else — unless the listening socket has TCP_DEFER_ACCEPT.
//! Run:     cargo run --bin prefork -- --self-test --idle 8 --requests 500 --no-idle-defence
//! Observe: the load takes more than 5 s (the worker's deadline); without the flag, well under 2.
//! Book:    book/src/patterns/prefork.md

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

/// Opens `count` idle connections, each on its own thread, and returns once all are
/// connected (so that they are queued before any request). Each thread holds its
/// connection, reopens it when the server drops it, and ends when `load_done` is set;
/// it returns how many times its connection was dropped.
pub fn hold<'scope>(
    scope: &'scope Scope<'scope, '_>,
    address: SocketAddr,
    count: u64,
    load_done: &'scope AtomicBool,
) -> Vec<ScopedJoinHandle<'scope, u64>> {
    let connected: Vec<Option<TcpStream>> = (0..count).map(|_| open(address)).collect();
    let threads = connected
        .into_iter()
        .map(|first| scope.spawn(move || keep_idle(address, first, load_done)))
        .collect();
    // A worker that is free accepts an idle connection within this: give it the time,
    // so that the requests queue behind them, as they would behind real idle clients.
    std::thread::sleep(Duration::from_millis(100));
    threads
}

/// The total of the threads' counts of dropped connections.
pub fn dropped(threads: Vec<ScopedJoinHandle<'_, u64>>) -> u64 {
    threads
        .into_iter()
        .map(|thread| thread.join().expect("an idle thread does not panic"))
        .sum()
}

// ANCHOR: keep_idle
fn keep_idle(address: SocketAddr, first: Option<TcpStream>, load_done: &AtomicBool) -> u64 {
    let mut dropped = 0;
    let mut connection = first;
    while !load_done.load(Ordering::Relaxed) {
        let Some(stream) = &mut connection else {
            std::thread::sleep(POLL);
            connection = open(address);
            continue;
        };
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(_) => {
                dropped += 1; // end-of-file (or a reply to nothing): the server dropped it
                connection = open(address);
            }
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock) => {}
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                dropped += 1; // reset
                connection = open(address);
            }
        }
    }
    dropped
} // the connection closes here
// ANCHOR_END: keep_idle

/// Connects and sends nothing; reads time out every POLL, to see the load end.
fn open(address: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(POLL)).ok()?;
    Some(stream)
}

/// How often an idle thread looks whether the load is done.
const POLL: Duration = Duration::from_millis(50);
