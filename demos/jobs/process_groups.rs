//! process_groups — one signal to a whole process group, as Ctrl-C sends it.
//!
//! Demonstrates: setpgid() moves children into a new process group (its id: the first
//! member's pid); killpg(pgid, SIGINT), what the terminal does when you type Ctrl-C,
//! delivers the signal to every member at once, and the parent, in another group, lives.
//! Run:     cargo run --bin process_groups      (add -- --hold 30 to look with ps)
//! Observe: the children share one pgid; all of them die by SIGINT; the parent exits 0.
//! Book:    book/src/jobs/job_control.md

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigHandler, Signal, killpg, signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork, getpid, pause, setpgid};
use proclab::narrate::event;
use proclab::{child, cli, jobstate, narrate, signals, sigstate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let parent = getpid();
    show(parent)?;
    // ANCHOR: setpgid
    let mut group = Pid::from_raw(0); // 0: the first child founds the group, with its pid
    let mut members = Vec::new();
    for _ in 0..args.children {
        // SAFETY: single-threaded here; the child calls setpgid and sigaction, then
        // pauses until a signal kills it (or ends in _exit).
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || be_a_member(group)),
            ForkResult::Parent { child } => {
                // The child makes the same call: whichever runs first, the child is in
                // the group before either of them goes on.
                setpgid(child, group).with_context(|| format!("setpgid({child}, {group})"))?;
                if group.as_raw() == 0 {
                    group = child;
                }
                members.push(child);
            }
        }
    }
    // ANCHOR_END: setpgid
    for &member in &members {
        wait_for_default_sigint(member)?;
        show(member)?;
    }
    let pids: Vec<i32> = members.iter().map(|member| member.as_raw()).collect();
    event("group")
        .field("pgid", group.as_raw())
        .field("members", &pids)
        .say(format!("process group {group}: {} members", members.len()));
    if !signals::sleep(args.hold) {
        return Ok(()); // Ctrl-C while holding: run_stoppable ends the members
    }

    // ANCHOR: killpg
    killpg(group, Signal::SIGINT).with_context(|| format!("killpg({group})"))?; // every member
    let text = format!("killpg({group}, SIGINT), as Ctrl-C does to a foreground group");
    event("killpg").field("pgid", group.as_raw()).say(text);
    let mut by_sigint = 0;
    for &member in &members {
        let status = child::wait_or_kill(member)?;
        by_sigint += u32::from(matches!(status, WaitStatus::Signaled(_, Signal::SIGINT, _)));
        event("reaped")
            .field("child", member.as_raw())
            .fields(child::ending(&status))
            .say(format!("waitpid({member}) -> {}", child::describe(&status)));
    }
    // ANCHOR_END: killpg
    signals::bail_if_stopped()?; // stopped while reaping: no summary
    let parent_pgid = show(parent)?.pgid; // still here: SIGINT went to the other group only
    let count = members.len();
    event("summary")
        .field("pgid", group.as_raw())
        .field("members", count)
        .field("killed_by_sigint", by_sigint)
        .field("parent_pgid", parent_pgid)
        .say(format!(
            "summary: {by_sigint} of {count} members of group {group} died by SIGINT; \
             the parent, in group {parent_pgid}, did not"
        ));
    Ok(())
}

// ANCHOR: be_a_member
/// The child: joins `group` (0: a new one, named after itself) and waits for a signal.
fn be_a_member(group: Pid) -> anyhow::Result<i32> {
    setpgid(Pid::from_raw(0), group).context("setpgid")?; // 0: this process
    // The lesson needs SIGINT's default action (a script's `cmd &` leaves it ignored).
    // SAFETY: SIG_DFL runs no code of ours.
    unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) }.context("signal(SIGINT)")?;
    signals::set_blocked(Signal::SIGINT, false)?; // nor blocked (a mask is inherited too)
    loop {
        pause(); // until a signal kills this process
    }
}
// ANCHOR_END: be_a_member

// ANCHOR: default_sigint
/// Waits until `pid` neither catches, ignores nor blocks SIGINT (SigCgt, SigIgn, SigBlk in
/// /proc): a fresh child has our Ctrl-C handler (or our SIG_IGN) until it installs the
/// default, and a SIGINT that came before would not kill it.
fn wait_for_default_sigint(pid: Pid) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        signals::bail_if_stopped()?;
        let sets = sigstate::signal_sets(pid.as_raw())?;
        if !sigstate::contains(sets.caught | sets.ignored | sets.blocked, libc::SIGINT) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pid}: SIGINT not default in 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
// ANCHOR_END: default_sigint

/// Prints what the kernel says of `pid`'s group and session, and returns it.
fn show(pid: Pid) -> anyhow::Result<jobstate::JobView> {
    let view = jobstate::job_view(pid.as_raw())?;
    event("proc")
        .fields(&view)
        .say(format!("kernel says: {}", view.line()));
    Ok(view)
}

/// Fork children into a new process group (setpgid), show their pgid and sid from /proc,
/// then send SIGINT to the whole group with one killpg(): every member dies of it, the
/// parent — in another group — does not.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  process_groups\n  process_groups --children 5 --json\n  \
                        process_groups --hold 2     # meanwhile: ps -o pid,pgid,sid,tpgid,stat,cmd"
)]
struct Args {
    /// How many children to put in the group (1-20).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=20))]
    children: u16,

    /// Hold the group this long before the killpg, to look at it (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
