//! jobs — foreground and background jobs on a terminal: tcsetpgrp, SIGTTIN, Ctrl-Z, SIGCONT.
//!
//! Demonstrates: a session leader (a tiny shell) gives the terminal to a job's process
//! group with tcsetpgrp() (tpgid in /proc changes); a background job that reads the
//! terminal is stopped by SIGTTIN; Ctrl-Z typed on the terminal sends SIGTSTP to the
//! foreground group (state T); SIGCONT resumes it; waitpid(WUNTRACED | WCONTINUED)
//! reports each stop and the continue.
//! Run:     cargo run --bin jobs                (add -- --hold 10 to look with ps at each step)
//! Observe: tpgid follows tcsetpgrp; both jobs stopped (T); then "continued".
//! Book:    book/src/jobs/job_control.md

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::prctl::set_child_subreaper;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, setpgid, setsid};
use proclab::narrate::event;
use proclab::{child, cli, jobstate, narrate, pty, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    // If the shell is killed, its jobs (orphans then) come to us, and are reaped.
    set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let hold = args.hold;
    // SAFETY: single-threaded here; the shell forks its jobs and reaps them (be_the_shell).
    let shell = unsafe { child::spawn("shell", move || be_the_shell(hold)) }?;
    shell.collect(&[])
}

fn be_the_shell(hold: Duration) -> anyhow::Result<()> {
    // ANCHOR: terminal
    let shell = setsid().context("setsid")?; // a session of its own, as a login shell has
    let pty = pty::open()?; // its master is the keyboard: what we write there is typed
    let terminal = File::options().read(true).write(true).open(&pty.slave)?; // our ctty
    signals::ignore(Signal::SIGTTOU)?; // as shells do: taking the terminal back would stop us
    // ANCHOR_END: terminal
    let slave = pty.slave.display();
    let text = format!("setsid() -> {shell}; {slave} is its controlling terminal");
    event("terminal").say(text);
    // ANCHOR: jobs
    let foreground = start_job(shell, &terminal)?;
    give_terminal(&terminal, foreground, hold)?; // its reads wait for input; Ctrl-Z reaches it
    let background = start_job(shell, &terminal)?;
    let background_stop = wait_for_change(background, hold)?; // its read: SIGTTIN

    event("ctrl_z").say("write(master, 0x1a): Ctrl-Z typed on the terminal");
    nix::unistd::write(&pty.master, &[0x1a]).context("write(master)")?; // VSUSP
    let foreground_stop = wait_for_change(foreground, hold)?; // SIGTSTP
    give_terminal(&terminal, shell, hold)?; // back to the shell, as its prompt comes back

    give_terminal(&terminal, foreground, hold)?; // `fg`: the terminal first, then
    killpg(foreground, Signal::SIGCONT).context("killpg(SIGCONT)")?; // run on
    let continued = wait_for_change(foreground, hold)?;
    // ANCHOR_END: jobs
    for job in [foreground, background] {
        killpg(job, Signal::SIGKILL).with_context(|| format!("killpg({job})"))?;
        waitpid(job, None).with_context(|| format!("waitpid({job})"))?;
    }
    // We hold our terminal's master: dropping it on return hangs the terminal up, and its
    // SIGHUP to the session leader (see sessions) would kill us.
    signals::ignore(Signal::SIGHUP)?;
    event("summary")
        .field("background_stop", &background_stop)
        .field("foreground_stop", &foreground_stop)
        .field("after_fg", &continued)
        .say(format!(
            "summary: background job {background}: {background_stop}; foreground job \
             {foreground}: {foreground_stop} (Ctrl-Z), then {continued} (fg)"
        ));
    Ok(())
}

/// Forks a job into a process group of its own (setpgid on both sides: process_groups).
fn start_job(shell: Pid, terminal: &File) -> anyhow::Result<Pid> {
    // SAFETY: single-threaded here; the job calls setpgid and sigaction, then reads the
    // terminal until a signal stops or kills it (or ends in _exit).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(shell, || {
            setpgid(Pid::from_raw(0), Pid::from_raw(0)).context("setpgid")?;
            // As shells do for a job: the stop signals' default actions (the shell ignores
            // SIGTTOU; we may have been started with any of them ignored).
            for stop in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
                signals::restore_default(stop);
                signals::set_blocked(stop, false)?;
            }
            loop {
                // In the foreground it waits for a line; in the background: SIGTTIN.
                nix::unistd::read(terminal, &mut [0u8; 64]).context("read(terminal)")?;
            }
        }),
        ForkResult::Parent { child } => {
            setpgid(child, child).with_context(|| format!("setpgid({child})"))?;
            Ok(child)
        }
    }
}

// ANCHOR: give_terminal
/// tcsetpgrp: makes `group` the terminal's foreground group; shows the kernel's view.
fn give_terminal(terminal: &File, group: Pid, hold: Duration) -> anyhow::Result<()> {
    // SAFETY: tcsetpgrp takes a descriptor and a process group id.
    if unsafe { libc::tcsetpgrp(terminal.as_raw_fd(), group.as_raw()) } != 0 {
        anyhow::bail!("tcsetpgrp({group}): {}", std::io::Error::last_os_error());
    }
    let tpgid = jobstate::job_view(getpid().as_raw())?.tpgid;
    let text = format!("tcsetpgrp(terminal, {group}); kernel says tpgid {tpgid}");
    event("tcsetpgrp")
        .field("pgrp", group.as_raw())
        .field("tpgid", tpgid)
        .say(text);
    std::thread::sleep(hold); // --hold: time to look
    Ok(())
}
// ANCHOR_END: give_terminal

// ANCHOR: wait
/// waitpid(WUNTRACED | WCONTINUED): returns when `job` stops or continues, not only when
/// it ends; then shows its state in /proc. Returns the status in words.
fn wait_for_change(job: Pid, hold: Duration) -> anyhow::Result<String> {
    let flags = WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED;
    let status = waitpid(job, Some(flags)).with_context(|| format!("waitpid({job})"))?;
    // Stopped: T. Continued: it runs back into its read, and sleeps there (S).
    let stopped = matches!(status, WaitStatus::Stopped(..));
    let state = if stopped { 'T' } else { 'S' };
    let seen = |view: &jobstate::JobView| view.state == state;
    jobstate::wait_until(job.as_raw(), "state", Duration::from_secs(5), seen)?;
    let how = child::describe(&status);
    let text = format!("waitpid({job}, WUNTRACED | WCONTINUED) -> {how}; kernel says {state}");
    event("waitpid")
        .field("job", job.as_raw())
        .field("status", &how)
        .field("state", state)
        .say(text);
    std::thread::sleep(hold);
    Ok(how)
}
// ANCHOR_END: wait

/// A tiny shell on a pty of its own: a background job that reads it is stopped (SIGTTIN),
/// Ctrl-Z stops the foreground job (SIGTSTP), `fg` resumes it; waitpid reports each change.
#[derive(Parser)]
#[command(after_help = "Examples:\n  jobs\n  jobs --json\n  \
                        jobs --hold 0.5     # at each step: ps -o pid,pgid,sid,tty,tpgid,stat,cmd -s <shell>")]
struct Args {
    /// Pause this long after each step, to look at it (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
