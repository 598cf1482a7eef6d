//! fifo — a named pipe: a pipe that unrelated programs find by its path.
//!
//! Demonstrates: mkfifo() puts a pipe in the file system; any program that may open the
//! path can use it, no common ancestor needed. open() of one end blocks until the other
//! end is opened too (a rendezvous); a non-blocking open for writing with no reader fails
//! with ENXIO. Once both ends are open the name can go: the pipe lives on.
//! Run:     cargo run --bin fifo               (or by hand, from two terminals:
//!          mkfifo /tmp/f; fifo reader /tmp/f; fifo writer /tmp/f)
//! Observe: the first open() returns only when the second side opens.
//! Book:    book/src/pipes/fifo.md
//!
//! Exit codes: as every demo; `fifo reader` exits 3 if the records did not arrive exactly
//! once.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nix::fcntl::{OFlag, open};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, execv, fork, getpid, mkfifo, read, write};
use proclab::inspect::{fd_target, running};
use proclab::names::PrivateDir;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, Tag, encode};
use proclab::{child, cli, narrate, signals};

/// Move records through a named pipe between two unrelated programs.
///
/// The demo makes a FIFO in a private directory, shows that a non-blocking open for
/// writing fails with ENXIO while nobody reads, then starts a reader and a writer by
/// exec'ing itself (they share nothing but the path). Each side's open() blocks until the
/// other side arrives. Once both ends are open, the FIFO and its directory are removed.
#[derive(Parser)]
#[command(after_help = "Examples:\n  fifo\n  fifo --writer-first\n  \
                        mkfifo /tmp/f; fifo reader /tmp/f    (and in another terminal: fifo writer /tmp/f)")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,

    /// Records the writer sends (1-1000000).
    #[arg(long, value_name = "K", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// Start the writer first: then it is the writer's open() that waits.
    #[arg(long)]
    writer_first: bool,

    /// How long the first side waits alone before the second is started (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.3", value_parser = cli::seconds)]
    delay: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Role {
    /// Open PATH (an existing FIFO) for reading and count records until EOF.
    Reader {
        /// The FIFO.
        path: PathBuf,
        /// How many records to expect (else: a gapless run from 0).
        #[arg(long, hide = true)]
        expect: Option<u64>,
        /// The demo's clock, in CLOCK_MONOTONIC ns.
        #[arg(long, hide = true)]
        t0: Option<u64>,
    },
    /// Open PATH (an existing FIFO) for writing and send records.
    Writer {
        /// The FIFO.
        path: PathBuf,
        /// Records to send (1-1000000).
        #[arg(long, value_name = "K", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        records: u64,
        /// Keep the FIFO open until its name is removed (the demo asks for it).
        #[arg(long, hide = true)]
        linger: bool,
        /// The demo's clock, in CLOCK_MONOTONIC ns.
        #[arg(long, hide = true)]
        t0: Option<u64>,
    },
}

/// Starts the timeline: on the demo's clock when the demo started us, else a new one.
fn start_clock(json: bool, role: &'static str, t0: Option<u64>) {
    match t0 {
        Some(start) => narrate::init_at(json, role, start),
        None => narrate::init(json, role),
    }
}

const RECORD: usize = 64;
const DEFAULT_DELAY: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let args: Args = cli::parse();
    let demo_options = args.records != 1000 || args.writer_first || args.delay != DEFAULT_DELAY;
    if args.role.is_some() && demo_options {
        cli::usage_error(
            "--records, --writer-first and --delay before `reader`/`writer` belong to the demo; give `writer` its own --records",
        );
    }
    match args.role {
        Some(Role::Reader {
            ref path,
            expect,
            t0,
        }) => {
            start_clock(args.json, "reader", t0);
            match reader(path, expect, t0.is_none()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(3),
                Err(error) => cli::exit_code(Err(error)),
            }
        }
        Some(Role::Writer {
            ref path,
            records,
            linger,
            t0,
        }) => {
            start_clock(args.json, "writer", t0);
            cli::exit_code(writer(path, records, linger, t0.is_none()))
        }
        None => {
            if args.delay > Duration::from_secs(60) {
                cli::usage_error("--delay is at most 60 seconds");
            }
            narrate::init(args.json, "demo");
            cli::run_stoppable(|| demo(&args))
        }
    }
}

fn demo(args: &Args) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    // ANCHOR: mkfifo
    let mut dir = PrivateDir::new().context("mkdtemp")?;
    let path = dir.path().join("fifo");
    mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
        .with_context(|| format!("mkfifo {}", path.display()))?;
    event("mkfifo")
        .field("path", &path)
        .field("dir", dir.path())
        .say(format!(
            "mkfifo({}, 0600) in a private directory (0700)",
            path.display()
        ));
    // ANCHOR_END: mkfifo

    // ANCHOR: enxio
    let error = open(
        &path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect_err("no reader yet");
    event("enxio").field("errno", format!("{error:?}")).say(format!(
        "open(O_WRONLY | O_NONBLOCK) with no reader -> {error:?} ({}): a writer may not wait, and nobody reads",
        error.desc()
    ));
    // ANCHOR_END: enxio

    let roles = if args.writer_first {
        ["writer", "reader"]
    } else {
        ["reader", "writer"]
    };
    let first = start(roles[0], &path, args.records)?;
    let mut started = vec![(roles[0], first)];
    if signals::sleep(args.delay) {
        started.push((roles[1], start(roles[1], &path, args.records)?));
    }

    // ANCHOR: unlink
    let both_open = started.len() == 2 && wait_until_open(&started, &path);
    if both_open {
        dir.remove().context("remove the FIFO and its directory")?;
        event("unlinked").field("dir_gone", !path.exists()).say(
            "both ends are open: removed the FIFO and its directory; the open descriptors keep the pipe alive",
        );
    }
    // ANCHOR_END: unlink

    let mut statuses = Vec::new();
    for (role, pid) in &started {
        let status = child::wait_or_kill(*pid)?;
        event("wait")
            .field("of", role)
            .field("child", pid.as_raw())
            .fields(child::ending(&status))
            .say(format!(
                "waitpid({pid}) -> the {role} {}",
                child::describe(&status)
            ));
        statuses.push((*role, status));
    }
    dir.remove().context("remove the FIFO and its directory")?;
    let reader_ok = statuses
        .iter()
        .any(|(role, status)| *role == "reader" && matches!(status, WaitStatus::Exited(_, 0)));
    event("summary")
        .field("path", &path)
        .field("first", roles[0])
        .field("sent", args.records)
        .field("exactly_once", reader_ok)
        .field("removed_while_open", both_open)
        .field("dir_gone", !dir.path().exists())
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(match signals::stop_requested() {
            Some(stop) => format!("summary: interrupted by {stop}; both sides ended, the FIFO removed"),
            None => format!(
                "summary: {} records from writer to reader through {}; the reader counted each exactly once: {reader_ok}",
                args.records,
                path.display()
            ),
        });
    Ok(())
}

/// Starts this same program as `fifo reader PATH` or `fifo writer PATH`: a new program,
/// which inherits nothing from the demo but stdout, stderr and the clock.
// ANCHOR: start
fn start(role: &'static str, path: &Path, records: u64) -> anyhow::Result<Pid> {
    let mut argv = vec![
        "fifo".to_owned(),
        role.to_owned(),
        path.display().to_string(),
    ];
    let count = if role == "reader" {
        "--expect"
    } else {
        "--records"
    };
    if role == "writer" {
        argv.push("--linger".to_owned()); // keep the FIFO open until its name is gone
    }
    argv.extend([
        count.to_owned(),
        records.to_string(),
        "--t0".to_owned(),
        narrate::start_ns().to_string(),
    ]);
    if narrate::json() {
        argv.push("--json".to_owned());
    }
    let argv: Vec<CString> = argv
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child execs at once (or _exits).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            execv(c"/proc/self/exe", &argv).context("exec /proc/self/exe")?;
            unreachable!("execv returns only errors")
        }),
        ForkResult::Parent { child } => {
            event("start")
                .field("of", role)
                .field("child", child.as_raw())
                .say(format!("started the {role}: {child}"));
            Ok(child)
        }
    }
}
// ANCHOR_END: start

/// Waits until every started process has the FIFO open (or has already ended), by
/// reading its /proc/<pid>/fd.
fn wait_until_open(started: &[(&str, Pid)], path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let has_it_open = |pid: Pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten();
        fds.filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .any(|fd| fd_target(pid.as_raw(), fd).is_some_and(|target| Path::new(&target) == path))
    };
    while Instant::now() < deadline && signals::stop_requested().is_none() {
        if started.iter().all(|(_, pid)| has_it_open(*pid)) {
            return true;
        }
        if started.iter().any(|(_, pid)| !running(pid.as_raw())) {
            return false; // one side ended early (an error): no rendezvous
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Opens one end of the FIFO at `path`, refusing anything that is not a FIFO — a regular
/// file, a directory, or a symbolic link that could point anywhere.
// ANCHOR: open
fn open_end(path: &Path, end: OFlag) -> anyhow::Result<OwnedFd> {
    let shown = path.display();
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => None,
        Ok(meta) if meta.file_type().is_symlink() => Some("a symbolic link; refusing to follow it"),
        Ok(meta) if meta.is_dir() => Some("a directory, not a FIFO"),
        Ok(_) => Some("not a FIFO (make one with mkfifo)"),
        Err(_) => Some("missing (make one with mkfifo)"),
    };
    if let Some(kind) = kind {
        bail!("{shown} is {kind}");
    }
    let name = if end == OFlag::O_RDONLY {
        "O_RDONLY"
    } else {
        "O_WRONLY"
    };
    event("open").say(format!(
        "open({shown}, {name}): waits until the other end is opened too"
    ));
    let start = Instant::now();
    // O_NOFOLLOW: if the FIFO was swapped for a symlink since the check, fail (ELOOP).
    let fd = open(
        path,
        end | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {shown}"))?;
    let waited = start.elapsed().as_secs_f64();
    event("opened")
        .field("fd", fd.as_raw_fd())
        .field("waited_s", waited)
        .say(format!(
            "open() -> fd {} after {waited:.3} s: the other side is here",
            fd.as_raw_fd()
        ));
    Ok(fd)
}
// ANCHOR_END: open

fn writer(path: &Path, records: u64, linger: bool, alone: bool) -> anyhow::Result<()> {
    let fifo = open_end(path, OFlag::O_WRONLY)?;
    for seq in 0..records {
        let record = encode(Tag { writer: 0, seq }, RECORD);
        let written = write(&fifo, &record).context("write")?;
        anyhow::ensure!(written == RECORD, "short write"); // RECORD <= PIPE_BUF: all or nothing
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while linger && path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1)); // the demo removes the name, then we close
    }
    drop(fifo);
    event(if alone { "summary" } else { "closed" })
        .field("records", records)
        .say(format!(
            "wrote {records} records, closed: the reader will see EOF"
        ));
    Ok(())
}

/// Reads records until EOF; returns whether they arrived exactly once.
fn reader(path: &Path, expect: Option<u64>, alone: bool) -> anyhow::Result<bool> {
    let fifo = open_end(path, OFlag::O_RDONLY)?;
    let (mut decoder, mut ledger) = (Decoder::default(), Ledger::new());
    let mut buffer = vec![0u8; 65_536];
    let mut highest = None;
    loop {
        let n = read(&fifo, &mut buffer).context("read")?;
        if n == 0 {
            break;
        }
        for found in decoder.feed(&buffer[..n]) {
            if let Found::Record(tag, _) = found {
                highest = highest.max(Some(tag.seq));
            }
            ledger.note(&found);
        }
    }
    let sent = expect.unwrap_or(highest.map_or(0, |seq| seq + 1));
    let tally = ledger.check(&[sent]);
    event(if alone { "summary" } else { "received" })
        .fields(tally)
        .say(format!(
            "EOF: {} records received, {} missing, {} duplicated, {} torn",
            tally.received, tally.missing, tally.duplicates, tally.torn
        ));
    Ok(tally.exactly_once() && tally.torn == 0 && decoder.leftover() == 0)
}
