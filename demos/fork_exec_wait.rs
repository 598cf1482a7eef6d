//! fork_exec_wait — the three calls every program you start is made of.
//!
//! Demonstrates: fork() copies the calling process into a child with a new pid; the child
//! execs another program, which replaces the program but keeps the pid; the parent's
//! waitpid() collects how the child ended — an exit status or a killing signal — which
//! the kernel kept for it until then.
//! Run:     cargo run --bin fork_exec_wait     (then try --exit-code 7, --signal SEGV,
//!          --exec nope, --buffer-pitfall)
//! Observe: /proc shows the child's command name change at exec while its pid stays.
//! Book:    book/src/lifecycle/fork_exec_wait.md

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, dup, dup2_stdout, execvp, fork, getpid, getppid, pipe};
use proclab::inspect::{exists, inspect};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

/// fork() a child, let it exec a program, wait for it, and decode how it ended.
///
/// The child reports its pid and its parent's; by default it execs
/// `sh -c 'echo ...'`, and the parent watches /proc as the child's command name changes
/// while its pid stays. Then the parent waits and decodes the status the kernel kept.
/// With --json the timeline is JSON Lines, and the exec'd program's own output goes to
/// stderr so that stdout stays valid JSON.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  fork_exec_wait\n  fork_exec_wait --exit-code 7\n  \
                  fork_exec_wait --signal SEGV\n  fork_exec_wait --exec ls -l /proc/self\n  \
                  fork_exec_wait --buffer-pitfall"
)]
struct Args {
    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,

    /// The child exits with status N (0-255) instead of exec'ing.
    #[arg(long, value_name = "N", conflicts_with_all = ["signal", "exec", "buffer_pitfall"])]
    exit_code: Option<u8>,

    /// The child is killed by this signal (KILL, TERM, SEGV, ABRT, 9…) instead of exec'ing.
    #[arg(long, value_name = "NAME", value_parser = cli::fatal_signal,
          conflicts_with_all = ["exec", "buffer_pitfall"])]
    signal: Option<Signal>,

    /// The program the child execs, with its arguments. Put it last: it takes the rest of
    /// the line (so --json goes before it).
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true,
          conflicts_with = "buffer_pitfall")]
    exec: Vec<String>,

    /// Show how a partial line printed before fork comes out twice when the child leaves
    /// through std::process::exit, and once through _exit.
    #[arg(long)]
    buffer_pitfall: bool,
}

/// What the child does after fork.
enum Fate {
    Exit(i32),
    Signal(Signal),
    Exec(Vec<String>),
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| {
        if args.buffer_pitfall {
            buffer_pitfall()
        } else {
            run(fate(args))
        }
    })
}

fn fate(args: Args) -> Fate {
    if let Some(code) = args.exit_code {
        Fate::Exit(code.into())
    } else if let Some(signal) = args.signal {
        Fate::Signal(signal)
    } else if !args.exec.is_empty() {
        Fate::Exec(args.exec)
    } else {
        let line = r#"echo "sh says: I am pid $$, my parent is $PPID""#;
        Fate::Exec(["sh", "-c", line].map(String::from).to_vec())
    }
}

fn run(fate: Fate) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    let parent = getpid();
    // ANCHOR: fork
    // SAFETY: single-threaded here; the child only writes to fd 1, execs or calls _exit.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || in_child(&fate)),
        ForkResult::Parent { child } => child,
    };
    event("fork")
        .field("child", child.as_raw())
        .say(format!("fork() -> child {child}"));
    // ANCHOR_END: fork

    let watched = match &fate {
        Fate::Exec(_) => Some(watch_for_exec(child)?),
        _ => None,
    };

    // ANCHOR: wait
    let status = child::wait_or_kill(child)?; // waitpid(child, 0); Ctrl-C kills the child first
    let ending = child::ending(&status);
    event("wait")
        .field("child", child.as_raw())
        .fields(&ending)
        .say(format!("waitpid({child}) -> {}", ending.status));
    if !exists(child.as_raw()) {
        event("gone").field("child", child.as_raw()).say(format!(
            "kernel says /proc/{child} is gone: the wait freed the pid"
        ));
    }
    // ANCHOR_END: wait

    let mut summary = event("summary")
        .field("mode", mode(&fate))
        .field("child", child.as_raw());
    if let Some((before, after)) = watched {
        summary = summary
            .field("comm_before", before)
            .field("comm_after", after);
    }
    summary
        .fields(&ending)
        .say(format!("summary: child {child} {}", ending.status));
    Ok(())
}

/// The child's side of the fork: say who it is, then become its fate. Returns only the
/// exit status for `child::run` to `_exit` with.
// ANCHOR: child
fn in_child(fate: &Fate) -> anyhow::Result<i32> {
    narrate::set_role("child");
    let (me, parent) = (getpid(), getppid());
    let name = inspect(me.as_raw())?.comm;
    event("started")
        .field("ppid", parent.as_raw())
        .field("comm", &name)
        .say(format!(
            "I am {me}, child of {parent}; the kernel calls me {name:?}"
        ));
    match fate {
        Fate::Exit(code) => {
            event("exit")
                .field("code", code)
                .say(format!("_exit({code})"));
            Ok(*code)
        }
        Fate::Signal(signal) => {
            event("kill")
                .field("signal", signal.as_str())
                .say(format!("kill({me}, {signal})"));
            child::prepare_to_die_by(*signal)?;
            kill(me, *signal)?;
            bail!("{signal} did not kill the child") // not reached: the signal is fatal
        }
        Fate::Exec(argv) => exec(argv),
    }
}
// ANCHOR_END: child

// ANCHOR: exec
fn exec(argv: &[String]) -> anyhow::Result<i32> {
    event("exec")
        .field("argv", argv)
        .say(format!("execvp({:?}, {argv:?})", argv[0]));
    child::default_sigpipe()?;
    let args: Vec<CString> = argv
        .iter()
        .map(|arg| CString::new(arg.as_str()))
        .collect::<Result<_, _>>()?;
    let json_safe = narrate::program_output_to_stderr()?; // --json: stdout stays JSON
    // execvp returns only if it failed: on success this process now runs the new program.
    let error = execvp(&args[0], &args).unwrap_err();
    drop(json_safe);
    event("exec_failed")
        .field("errno", format!("{error:?}"))
        .say(format!(
            "execvp({:?}) failed: {error:?} ({})",
            argv[0],
            error.desc()
        ));
    // As shells do: 127 when the program is not found, 126 when it cannot be run.
    Ok(if error == Errno::ENOENT { 127 } else { 126 })
}
// ANCHOR_END: exec

/// Watches the child's command name in /proc until exec changes it, or until the child
/// has ended without exec'ing. Returns the names before and after.
// ANCHOR: watch
fn watch_for_exec(child: Pid) -> anyhow::Result<(String, String)> {
    // A forked child starts as a copy of its parent, name included.
    let name_at_fork = inspect(getpid().as_raw())?.comm;
    let view = loop {
        let view = inspect(child.as_raw())?; // still there: nobody has waited for it yet
        if view.comm != name_at_fork || view.state == 'Z' {
            break view;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let what = match view.comm == name_at_fork {
        true => "ended without exec: still",
        false => "now runs a new program under the same pid:",
    };
    event("exec_seen")
        .field("child", child.as_raw())
        .field("comm", &view.comm)
        .field("state", view.state.to_string())
        .say(format!(
            "kernel says {child} {what} {:?}, state {}",
            view.comm,
            view.state_in_words()
        ));
    Ok((name_at_fork, view.comm))
}
// ANCHOR_END: watch

fn mode(fate: &Fate) -> &'static str {
    match fate {
        Fate::Exit(_) => "exit-code",
        Fate::Signal(_) => "signal",
        Fate::Exec(_) => "exec",
    }
}

/// `--buffer-pitfall`: the same experiment twice, with the child leaving through
/// `std::process::exit` (which flushes Rust's stdout buffer) and through `_exit` (which
/// does not). The bytes that reach stdout are caught in a pipe and counted.
fn buffer_pitfall() -> anyhow::Result<()> {
    let mut copies = serde_json::Map::new();
    for via_exit in [true, false] {
        let how = if via_exit {
            "std::process::exit(0)"
        } else {
            "_exit(0)"
        };
        let marker = format!("[printed once by {}, before fork] ", getpid());
        let caught = catch_stdout(|| print_then_fork(&marker, via_exit))?;
        let count = caught.matches(&marker).count();
        event("pitfall")
            .field("exit_via", how)
            .field("copies", count)
            .field("caught", &caught)
            .say(format!(
                "child left through {how}: stdout got {caught:?} -- the text appears {count}x"
            ));
        copies.insert(how.into(), count.into());
    }
    event("summary")
        .field("mode", "buffer-pitfall")
        .field("copies", &copies)
        .say(
            "summary: a forked child shares nothing, but it copies everything -- \
         unflushed buffers included; leave a child with _exit",
        );
    Ok(())
}

// ANCHOR: pitfall
fn print_then_fork(marker: &str, via_exit: bool) -> anyhow::Result<()> {
    print!("{marker}"); // no newline: the text waits in Rust's stdout buffer
    let parent = getpid();
    // SAFETY: single-threaded here; the child leaves at once through one of the exits.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child if via_exit => std::process::exit(0), // flushes its copy of the buffer
        ForkResult::Child => child::run_then_exit(parent, || Ok(0)), // _exit: the copy is dropped
        ForkResult::Parent { child } => {
            waitpid(child, None)?;
        }
    }
    println!(); // the parent's own copy goes out with its newline
    Ok(std::io::stdout().flush()?)
}
// ANCHOR_END: pitfall

/// Runs `experiment` with fd 1 pointing into a pipe, and returns what was written there.
fn catch_stdout(experiment: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<String> {
    let saved_stdout: OwnedFd = dup(std::io::stdout()).context("dup(1)")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    dup2_stdout(&write_end).context("dup2")?;
    drop(write_end); // fd 1 is now the only write end in this process
    let result = experiment();
    dup2_stdout(&saved_stdout).context("dup2")?; // the last write end closes: EOF
    result?;
    let mut caught = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut caught)
        .context("read pipe")?;
    Ok(caught)
}
