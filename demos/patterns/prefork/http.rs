//! http — prefork's protocol: HTTP/1.1, one request per connection, as small as it can be.
//!
//! Demonstrates: nothing of the kernel; what lets curl, ab and wrk drive the server: a
//! request head (a request line and headers, ending in an empty line) and a reply with a
//! status line, `Content-Length` and `Connection: close` — then the worker closes.
//! Run:     cargo run --bin prefork -- --port 8080     (then: curl -i 127.0.0.1:8080/echo/hi)
//! Observe: `HTTP/1.1 200 OK`, `Connection: close`, and a body that names the worker.
//! Book:    book/src/patterns/prefork.md

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::options::Server;
use crate::worker::{FIRST_BYTE_DEADLINE, REQUEST_DEADLINE};

/// What a request asks for.
pub enum Route<'a> {
    /// `GET /echo/<tag>`: the tag back, and who answered.
    Echo(&'a str),
    /// `GET /slow/<ms>/<tag>`: the same, after `ms` milliseconds.
    Slow(u64, &'a str),
    /// `GET /status`: the scoreboard, as JSON.
    Status,
    /// Anything else: 404, or 400 for a SLOW beyond a minute.
    NotFound,
    BadSlow,
}

/// The route of a request head's first line, `GET <path> HTTP/1.x`.
pub fn route(head: &str) -> Route<'_> {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let (Some("GET"), Some(path)) = (words.next(), words.next()) else {
        return Route::NotFound;
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["echo", tag] if !tag.is_empty() => Route::Echo(tag),
        ["slow", ms, tag] if !tag.is_empty() => match ms.parse::<u64>() {
            Ok(ms) if ms <= 60_000 => Route::Slow(ms, tag),
            _ => Route::BadSlow,
        },
        ["status"] => Route::Status,
        _ => Route::NotFound,
    }
}

/// A whole reply: status line, the length of the body, and the promise to close.
pub fn reply(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// How long a client may take over its request: its first byte, then the whole head.
#[derive(Clone, Copy)]
pub struct Deadlines {
    pub first_byte: Duration,
    pub whole_head: Duration,
}

// ANCHOR: read_head
/// Reads a request head (up to the empty line): at most MAX_HEAD bytes, the first of them
/// within `first_byte`, all within `whole_head`. None: closed, reset, too long, too slow.
pub fn read_head(mut stream: &TcpStream, deadlines: Deadlines) -> Option<String> {
    let started = Instant::now();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|end| end == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let limit = match head.is_empty() {
            true => deadlines.first_byte,
            false => deadlines.whole_head,
        };
        let left = (started + limit).checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buffer) {
            Ok(0) => return None,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None, // reset, or a deadline passed
        }
    }
    let end = head.windows(4).position(|end| end == b"\r\n\r\n")?;
    String::from_utf8(head[..end].to_vec()).ok()
}
// ANCHOR_END: read_head

/// The client's side: the request for `path`, as curl would send it.
pub fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// The client's side: the status code and body of a whole reply — one status line,
/// headers, and exactly `Content-Length` bytes after them. None: not a whole reply.
pub fn parse_reply(reply: &[u8]) -> Option<(u16, &str)> {
    let text = std::str::from_utf8(reply).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let length: usize = lines
        .find_map(|line| line.strip_prefix("Content-Length: "))?
        .parse()
        .ok()?;
    (body.len() == length).then_some((status, body))
}

/// Whether the server defends its workers against connections that send nothing.
#[derive(Clone, Copy, PartialEq)]
pub enum IdleDefence {
    /// TCP_DEFER_ACCEPT on the listening socket, and a short first-byte deadline.
    On,
    /// Neither: an idle connection holds a worker for the whole REQUEST_DEADLINE.
    Off,
}

impl IdleDefence {
    pub fn name(self) -> &'static str {
        match self {
            IdleDefence::On => "on",
            IdleDefence::Off => "off",
        }
    }
}

impl Server {
    pub fn idle_defence(&self) -> IdleDefence {
        match self.no_idle_defence {
            true => IdleDefence::Off,
            false => IdleDefence::On,
        }
    }

    /// How long a worker waits for a request's first byte, and for its whole head.
    pub fn deadlines(&self) -> Deadlines {
        let whole_head = REQUEST_DEADLINE;
        let first_byte = match self.idle_defence() {
            IdleDefence::On => FIRST_BYTE_DEADLINE,
            IdleDefence::Off => whole_head,
        };
        Deadlines {
            first_byte,
            whole_head,
        }
    }
}

/// A request head may be at most this long.
const MAX_HEAD: usize = 8192;
