//! narrate — the timeline every demo prints.
//!
//! Every demo tells what happens as one line per event:
//!
//! ```text
//!   0.000s [parent 4242] fork() -> child 4243
//!   0.001s [child  4243] exit(7)
//! ```
//!
//! or, with `--json`, the same events as JSON Lines — one object per line with `t`,
//! `pid`, `role`, `event`, `text` and the event's own fields; the last one is the
//! `summary`.
//!
//! Why a module for something as simple as printing: because printing across `fork` is
//! where classic demos go wrong.
//! - Each line is built in memory and written with a single `write(2)` on fd 1. Nothing is
//!   buffered in user space, so a fork never duplicates text, and lines from parent and
//!   children never tear (a pipe keeps a write of at most `PIPE_BUF` bytes whole).
//! - Time is measured on CLOCK_MONOTONIC from one instant taken by [`init`] before the
//!   first fork; the children inherit it, so all processes share one clock. A program
//!   exec'd by a demo is handed the same instant ([`start_ns`], [`init_at`]).
//! - When stdout is closed (`demo | head -1`), the first failed write turns the timeline
//!   silent and the demo finishes its work quietly — reaping its children and removing
//!   what it created — instead of panicking or leaving them behind.

use std::fmt::Display;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, fcntl};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::dup2_stdout;
use serde::Serialize;
use serde_json::{Map, Value};

struct Timeline {
    start_ns: u64,
    json: bool,
}

static TIMELINE: OnceLock<Timeline> = OnceLock::new();
/// The role printed in this process's lines; set again in each child after fork.
static ROLE: Mutex<&'static str> = Mutex::new("main");
/// Set once stdout is gone (EPIPE): every later line is dropped.
static SILENT: AtomicBool = AtomicBool::new(false);

/// Starts the clock and chooses the format. Call once, first thing in `main`, before any
/// fork.
pub fn init(json: bool, role: &'static str) {
    init_at(json, role, monotonic_ns());
}

/// Like [`init`], but on a clock started earlier by another program of the demo
/// (see [`start_ns`]).
pub fn init_at(json: bool, role: &'static str, start_ns: u64) {
    let _ = TIMELINE.set(Timeline { start_ns, json });
    set_role(role);
}

/// The timeline's starting instant, in CLOCK_MONOTONIC nanoseconds: pass it to a program
/// you exec so that its lines share your clock.
pub fn start_ns() -> u64 {
    timeline().start_ns
}

/// CLOCK_MONOTONIC now, in nanoseconds.
///
/// # References: clock_gettime(2)
fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// Names this process in the timeline (`parent`, `child`, `worker`…). A child calls it
/// right after fork; the pid is read fresh for every line.
pub fn set_role(role: &'static str) {
    *ROLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = role;
}

/// True when the demo was asked for JSON Lines.
pub fn json() -> bool {
    timeline().json
}

/// Seconds since [`init`], on the clock all the demo's processes share.
pub fn elapsed() -> f64 {
    monotonic_ns().saturating_sub(timeline().start_ns) as f64 / 1e9
}

fn timeline() -> &'static Timeline {
    TIMELINE.get_or_init(|| Timeline {
        start_ns: monotonic_ns(),
        json: false,
    })
}

/// The fields every event has; an event's own fields may not reuse them.
const RESERVED: [&str; 5] = ["t", "pid", "role", "event", "text"];

/// Starts an event named `name` (`fork`, `wait`, `summary`…): add its fields, then
/// [`Event::say`] it.
pub fn event(name: &'static str) -> Event {
    Event {
        name,
        fields: Map::new(),
    }
}

/// One event of the timeline, built up before it is written.
#[must_use = "an event is written only by .say()"]
pub struct Event {
    name: &'static str,
    fields: Map<String, Value>,
}

impl Event {
    /// Adds a field to the JSON object (text mode shows only the sentence).
    pub fn field(mut self, key: &str, value: impl Serialize) -> Self {
        assert!(
            !RESERVED.contains(&key),
            "{key:?} is a field every event has"
        );
        let value = serde_json::to_value(value).expect("timeline fields are plain data");
        self.fields.insert(key.to_owned(), value);
        self
    }

    /// Adds every field of `fields`, which must serialize to an object (a struct).
    pub fn fields(mut self, fields: impl Serialize) -> Self {
        match serde_json::to_value(fields) {
            Ok(Value::Object(object)) => {
                assert!(
                    !object.keys().any(|key| RESERVED.contains(&key.as_str())),
                    "reserved field"
                );
                self.fields.extend(object)
            }
            _ => panic!("Event::fields takes a struct or map"),
        }
        self
    }

    /// Writes the event: in text mode the sentence `text` after the time and the process;
    /// in JSON mode an object with `t`, `pid`, `role`, `event`, `text` and the fields.
    pub fn say(self, text: impl Display) {
        let t = elapsed();
        let pid = std::process::id();
        let role = *ROLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let line = if json() {
            let mut object = Map::new();
            object.insert("t".into(), Value::from((t * 1e6).round() / 1e6));
            object.insert("pid".into(), pid.into());
            object.insert("role".into(), role.into());
            object.insert("event".into(), self.name.into());
            object.insert("text".into(), text.to_string().into());
            object.extend(self.fields);
            let mut line = Value::Object(object).to_string();
            line.push('\n');
            line
        } else {
            format!("{t:7.3}s [{role:<6} {pid}] {text}\n")
        };
        write_line(line.as_bytes());
    }
}

/// Writes one whole line to fd 1 with `write(2)`, retrying only what a signal or a full
/// pipe left unwritten. On EPIPE or any other error the timeline goes silent.
///
/// # References: write(2), pipe(7) (PIPE_BUF atomicity)
fn write_line(mut bytes: &[u8]) {
    if SILENT.load(Ordering::Relaxed) {
        return;
    }
    let stdout = std::io::stdout();
    while !bytes.is_empty() {
        match nix::unistd::write(&stdout, bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                SILENT.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// While it lives, in `--json` mode only, fd 1 points at stderr; dropping it points fd 1
/// back at the timeline. See [`program_output_to_stderr`].
#[must_use = "fd 1 is restored when this is dropped"]
pub struct StdoutDiverted {
    saved: Option<OwnedFd>,
}

/// In `--json` mode, sends what a program exec'd next writes to its stdout to stderr, so
/// that the demo's stdout stays pure JSON Lines; in text mode it changes nothing. If the
/// exec fails, drop the guard before narrating the failure. The saved descriptor is
/// close-on-exec, so the new program does not inherit it.
///
/// # References: dup2(2), fcntl(2) F_DUPFD_CLOEXEC
pub fn program_output_to_stderr() -> nix::Result<StdoutDiverted> {
    if !json() {
        return Ok(StdoutDiverted { saved: None });
    }
    let stdout = std::io::stdout();
    let saved = fcntl(&stdout, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    dup2_stdout(std::io::stderr())?;
    Ok(StdoutDiverted { saved: Some(saved) })
}

impl Drop for StdoutDiverted {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = dup2_stdout(saved);
        }
    }
}
