//! fork_exec_wait — the three calls every program you start is made of.
//!
//! Demonstrates: fork() copies the calling process into a child with a new pid; the child
//! execs another program, which replaces the program but keeps the pid; the parent's
//! waitpid() blocks until the child ends and collects the status the kernel kept for it.
//! Run:     cargo run --bin fork_exec_wait            (or -- --exec sleep 30, to look with ps)
//! Observe: /proc shows the child's command name change at exec while its pid stays.
//! Book:    book/src/lifecycle/fork_exec_wait.md

use std::ffi::CString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, execvp, fork, getpid};
use proclab::inspect::inspect;
use proclab::narrate::event;
use proclab::{child, cli, lifecycle, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let argv = program(args);
    let parent = getpid();
    // ANCHOR: fork
    // SAFETY: single-threaded here; the child reads its name from /proc and narrates
    // (both allocate), then execs, or calls _exit if the exec fails.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || in_child(&argv)),
        ForkResult::Parent { child } => child,
    };
    event("fork")
        .field("child", child.as_raw())
        .say(format!("fork() -> child {child}"));
    // ANCHOR_END: fork

    let (comm_before, comm_after) = watch_for_exec(child)?;

    // ANCHOR: wait
    let status = loop {
        if signals::stop_requested().is_some() {
            let _ = kill(child, Signal::SIGKILL); // Ctrl-C or SIGTERM: end the child, reap it
        }
        match waitpid(child, None) {
            // The stop signals' handlers have no SA_RESTART: a signal ends the wait early.
            Err(Errno::EINTR) => continue,
            other => break other.with_context(|| format!("waitpid({child})"))?,
        }
    };
    let ending = child::ending(&status);
    lifecycle::say_waited(child, &ending); // and whether /proc/<child> is gone
    // ANCHOR_END: wait

    event("summary")
        .field("mode", "exec")
        .field("child", child.as_raw())
        .field("comm_before", comm_before)
        .field("comm_after", comm_after)
        .fields(&ending)
        .say(format!("summary: child {child} {}", ending.status));
    Ok(())
}

/// The child's side of the fork: say who it is, then exec. Returns only if the exec
/// failed, with the exit status for `run_then_exit` to `_exit` with.
// ANCHOR: child
fn in_child(argv: &[String]) -> anyhow::Result<i32> {
    narrate::set_role("child");
    lifecycle::say_who_i_am()?; // pid, parent's pid, and the name /proc gives it
    lifecycle::say_exec(argv);
    child::default_sigpipe()?; // Rust ignores SIGPIPE; the new program expects the default
    let args: Vec<CString> = argv
        .iter()
        .map(|arg| CString::new(arg.as_str()))
        .collect::<Result<_, _>>()?;
    let json_safe = narrate::program_output_to_stderr()?; // --json: stdout stays JSON
    // execvp returns only if it failed: on success this process now runs the new program.
    let error = execvp(&args[0], &args).unwrap_err();
    drop(json_safe);
    // As shells do: 127 when the program is not found, 126 when it cannot be run.
    Ok(lifecycle::exec_failed(&argv[0], error))
}
// ANCHOR_END: child

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
    // The state is whatever /proc says at that instant: R or S while the new program runs,
    // Z if it has already ended (sh's echo is quick). The line leaves it to --json.
    let what = match view.comm == name_at_fork {
        true => "ended without exec: still",
        false => "runs a new program under the same pid:",
    };
    event("exec_seen")
        .field("child", child.as_raw())
        .field("comm", &view.comm)
        .field("state", view.state.to_string())
        .say(format!("kernel says {child} {what} {:?}", view.comm));
    Ok((name_at_fork, view.comm))
}
// ANCHOR_END: watch

/// The program the child execs: `--exec`'s, or a shell that says who it is.
fn program(args: &Args) -> Vec<String> {
    if !args.exec.is_empty() {
        return args.exec.clone();
    }
    let line = r#"echo "sh says: I am pid $$, my parent is $PPID""#;
    ["sh", "-c", line].map(String::from).to_vec()
}

/// fork() a child, let it exec a program (`sh -c 'echo ...'` or --exec's), and wait for it.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  fork_exec_wait\n  fork_exec_wait --exec sleep 3      # then: ps -o pid,ppid,stat,comm -C sleep\n  \
                  fork_exec_wait --json --exec ls -l /proc/self"
)]
struct Args {
    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,

    /// The program the child execs, with its arguments. Put it last: it takes the rest of
    /// the line (so --json goes before it).
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    exec: Vec<String>,
}
