//! zombie — a child that has exited but has not been waited for.
//!
//! Demonstrates: between a child's exit and its parent's waitpid(), the kernel keeps the
//! child's pid and exit status; `ps` shows it as Z <defunct>. SIGKILL cannot remove it;
//! only the parent's wait can.
//! Run:     cargo run --bin zombie            (add -- --hold 30 to inspect it with ps)
//! Observe: the kernel reports state Z for the child until the parent reaps it.
//! Book:    book/src/lifecycle/zombie.md

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, getpid};
use proclab::inspect::{exists, inspect, wait_for_state};
use proclab::narrate::event;
use proclab::{child, cli, lifecycle, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let parent = getpid();

    // ANCHOR: fork
    let mut children = Vec::new();
    for index in 0..args.children {
        let status = 7 + i32::from(index); // the kernel keeps only the low 8 bits
        // SAFETY: single-threaded here; the child narrates one line (which allocates) and
        // calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("child");
                event("exit")
                    .field("code", status)
                    .say(format!("_exit({status})"));
                Ok(status)
            }),
            ForkResult::Parent { child } => {
                event("fork")
                    .field("child", child.as_raw())
                    .say(format!("fork() -> child {child}"));
                children.push(child);
            }
        }
        if signals::stop_requested().is_some() {
            break; // Ctrl-C: fork no more; reap those we have
        }
    }
    // ANCHOR_END: fork

    // ANCHOR: observe
    // No waitpid yet: each child exits, and the kernel keeps what is left of it.
    for &child in &children {
        let view = wait_for_state(child.as_raw(), 'Z', Duration::from_secs(5))?;
        event("zombie")
            .field("child", child.as_raw())
            .field("state", view.state.to_string())
            .field("ppid", view.ppid)
            .say(format!(
                "kernel says {child} is {}, parent {}",
                view.state_in_words(),
                view.ppid
            ));
    }
    // ANCHOR_END: observe

    // ANCHOR: kill
    let target = children[0];
    kill(target, Signal::SIGKILL).with_context(|| format!("kill({target}, SIGKILL)"))?;
    let after = inspect(target.as_raw())?;
    event("kill_zombie")
        .field("child", target.as_raw())
        .field("state", after.state.to_string())
        .say(format!(
            "kill({target}, SIGKILL) -> ok, yet kernel says {target} is still {}: \
             it is already dead, only its parent's wait can remove it",
            after.state_in_words()
        ));
    // ANCHOR_END: kill

    // ANCHOR: hold
    let zombies: Vec<i32> = children.iter().map(|child| child.as_raw()).collect();
    lifecycle::say_holding_zombies(parent, &zombies, args.hold);
    if !signals::sleep(args.hold) {
        event("interrupted").say("interrupted: reaping the zombies before exiting");
    }
    // ANCHOR_END: hold

    // ANCHOR: reap
    let mut statuses = Vec::new();
    for &child in &children {
        let status = waitpid(child, None).with_context(|| format!("waitpid({child})"))?;
        let ending = child::ending(&status);
        let gone = !exists(child.as_raw());
        event("reap")
            .field("child", child.as_raw())
            .fields(&ending)
            .field("gone", gone)
            .say(format!(
                "waitpid({child}) -> {}; /proc/{child} {}",
                ending.status,
                if gone { "is gone" } else { "is still there" }
            ));
        statuses.push(ending.code);
    }
    // ANCHOR_END: reap

    lifecycle::say_zombie_summary(&zombies, &statuses, after.state);
    Ok(())
}

/// Make zombies: children that have exited but that nobody has waited for yet.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  zombie\n  zombie --hold 3      # then run the ps command it prints\n  \
                        zombie --children 5 --json"
)]
struct Args {
    /// How many children to fork (1-1000); child i calls _exit(7 + i).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Keep the zombies unreaped this long (0-3600 s), to look at them from outside.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
