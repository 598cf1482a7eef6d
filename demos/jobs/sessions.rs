//! sessions — a session leader, its controlling terminal, and SIGHUP when the terminal goes.
//!
//! Demonstrates: setsid() makes a new session with the caller as its leader and no
//! terminal; the first terminal the leader opens becomes its controlling terminal (tty_nr
//! in /proc), with the leader's group in the foreground (tpgid); when the terminal hangs up
//! — here the last descriptor of a pseudo-terminal's master is closed — the kernel sends
//! SIGHUP to the session leader, and its default action kills it.
//! Run:     cargo run --bin sessions            (add -- --hold 30 to look with ps)
//! Observe: sid == the leader's pid, tty pts/N, tpgid == the leader's pid; then SIGHUP.
//! Book:    book/src/jobs/job_control.md

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, fork, getpid, pause, setsid};
use proclab::narrate::event;
use proclab::{child, cli, jobstate, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let parent = getpid();
    // ANCHOR: openpt
    // SAFETY: posix_openpt takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) }; // not *our* terminal
    check(fd, "posix_openpt")?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) }; // the terminal emulator's end
    // SAFETY: grantpt and unlockpt take a descriptor and touch no memory of ours.
    check(unsafe { libc::grantpt(fd) }, "grantpt")?; // the slave's owner: you
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(fd) }, "unlockpt")?; // the slave may be opened now
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: ptsname_r writes at most name.len() bytes, NUL included, into `name`.
    let error = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
    anyhow::ensure!(
        error == 0,
        "ptsname_r: {}",
        std::io::Error::from_raw_os_error(error)
    );
    // SAFETY: on success `name` holds a NUL-terminated string.
    let slave = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // ANCHOR_END: openpt
    event("openpt").field("slave", &slave).say(format!(
        "posix_openpt -> master fd {}, grantpt, unlockpt, ptsname -> {slave}",
        master.as_raw_fd()
    ));

    // SAFETY: single-threaded here; the child closes the master, calls setsid, opens the
    // slave and pauses until a signal kills it (or ends in _exit).
    let leader = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || lead_a_session(master, &slave)),
        ForkResult::Parent { child } => child,
    };
    let limit = Duration::from_secs(5);
    // Until its setsid, the child is in our session, with our terminal if we have one; and
    // setsid sets the sid a moment before it drops that terminal: wait for the pty's.
    let parent_view = jobstate::job_view(parent.as_raw())?;
    let ours = parent_view.tty_nr;
    let on_the_pty = |v: &jobstate::JobView| v.sid == v.pid && v.tty_nr != 0 && v.tty_nr != ours;
    let view = jobstate::wait_until(leader.as_raw(), "terminal", limit, on_the_pty)?;
    for seen in [&parent_view, &view] {
        event("proc")
            .fields(seen)
            .say(format!("kernel says: {}", seen.line()));
    }
    if !signals::sleep(args.hold) {
        return Ok(()); // Ctrl-C while holding: run_stoppable ends the leader
    }

    // ANCHOR: hangup
    drop(master); // its last descriptor: the terminal hangs up, its session leader gets SIGHUP
    event("close").say("close(master): the terminal hangs up");
    let status = child::wait_or_kill(leader)?;
    // ANCHOR_END: hangup
    event("reaped")
        .field("child", leader.as_raw())
        .fields(child::ending(&status))
        .say(format!("waitpid({leader}) -> {}", child::describe(&status)));
    let by_sighup = matches!(status, WaitStatus::Signaled(_, Signal::SIGHUP, _));
    let (sid, terminal, tpgid) = (view.sid, view.terminal(), view.tpgid);
    event("summary")
        .field("leader", leader.as_raw())
        .field("sid", sid)
        .field("terminal", &terminal)
        .field("tpgid", tpgid)
        .field("killed_by_sighup", by_sighup)
        .say(format!(
            "summary: {leader} led session {sid} on {terminal} (foreground group {tpgid}); \
             killed by SIGHUP at the hangup: {by_sighup}"
        ));
    Ok(())
}

// ANCHOR: leader
/// The child: leads a new session whose controlling terminal is the pty's slave.
fn lead_a_session(master: OwnedFd, slave: &str) -> anyhow::Result<i32> {
    narrate::set_role("leader");
    drop(master); // the parent's copy is then the last: its close is the hangup
    signals::restore_default(Signal::SIGHUP); // under nohup it is ignored: the lesson needs it
    let session = setsid().context("setsid")?; // new session and group, no terminal yet
    // A session leader without a terminal that opens one (no O_NOCTTY) acquires it.
    let terminal = std::fs::File::options().read(true).write(true).open(slave);
    let _terminal = terminal.with_context(|| format!("open {slave}"))?;
    event("setsid").field("sid", session.as_raw()).say(format!(
        "setsid() -> session {session}; open({slave}): my controlling terminal"
    ));
    loop {
        pause(); // until the hangup's SIGHUP kills this process
    }
}
// ANCHOR_END: leader

fn check(result: libc::c_int, call: &str) -> anyhow::Result<()> {
    if result == -1 {
        anyhow::bail!("{call}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Open a pseudo-terminal, fork a child that calls setsid() and opens the terminal —
/// which becomes the new session's controlling terminal — show sid, tty and tpgid from
/// /proc, then close the terminal's master: the session leader dies of SIGHUP.
#[derive(Parser)]
#[command(after_help = "Examples:\n  sessions\n  sessions --json\n  \
                        sessions --hold 2     # meanwhile: ps -o pid,pgid,sid,tty,tpgid,stat,cmd -t pts/N")]
struct Args {
    /// Keep the session and its terminal this long before the hangup (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
