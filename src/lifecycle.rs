//! lifecycle — plumbing for the lifecycle programs' timelines: the lesson's calls stay in
//! the programs; this is the wording of what they see and count (the `say_*` functions,
//! one event each, with the fields the chapters list), and waiting that is not the lesson
//! of the program that waits.

use std::ffi::CString;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};

use crate::child::{self, Ending};
use crate::inspect::{exists, inspect};
use crate::narrate::event;
use crate::signals;

/// `count(1, "zombie", "zombies")` is "1 zombie", `count(3, …)` "3 zombies": a summary
/// never says "1 zombies".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Waits up to `limit` for the process of `pidfd` to end; false if it still runs, or if a
/// stop signal came first. A pidfd works for any process, not only a child of ours, and
/// becomes readable when the process ends (sigchld_pidfd shows the calls written out).
///
/// # References: pidfd_open(2), poll(2)
pub fn until_ended(pidfd: BorrowedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if crate::signals::wait_readable(Some(pidfd), left.min(Duration::from_secs(1))) {
            return true;
        }
        if left.is_zero() || signals::stop_requested().is_some() {
            return false;
        }
    }
}

/// In a forked child: narrates `exec`, then `execvp(argv[0], argv)` with SIGPIPE back to
/// its default (and, with --json, the program's output on stderr). Returns only if the
/// exec failed, after narrating `exec_failed`: 127 if the program was not found, else
/// 126, as shells do. fork_exec_wait writes these calls out; child_status uses this.
///
/// # References: execvp(3), execve(2)
pub fn exec(argv: &[String]) -> anyhow::Result<i32> {
    use crate::narrate;
    say_exec(argv);
    child::default_sigpipe()?;
    let args: Vec<CString> = argv
        .iter()
        .map(|arg| CString::new(arg.as_str()))
        .collect::<Result<_, _>>()?;
    let json_safe = narrate::program_output_to_stderr()?; // --json: stdout stays JSON
    let error = nix::unistd::execvp(&args[0], &args).unwrap_err(); // returns only on failure
    drop(json_safe);
    Ok(exec_failed(&argv[0], error))
}

/// Narrates `exec`: the `execvp` call about to be made, with its argument vector.
pub fn say_exec(argv: &[String]) {
    let text = format!("execvp({:?}, {argv:?})", argv[0]);
    event("exec").field("argv", argv).say(text);
}

/// After a failed `execvp(program, …)`: narrates `exec_failed` and returns the exit status
/// a shell would give, 127 when the program is not found (ENOENT), else 126.
///
/// # References: execvp(3), sh(1p) "Command Search and Execution"
pub fn exec_failed(program: &str, error: Errno) -> i32 {
    let why = error.desc();
    event("exec_failed")
        .field("errno", format!("{error:?}"))
        .say(format!("execvp({program:?}) failed: {error:?} ({why})"));
    if error == Errno::ENOENT { 127 } else { 126 }
}

/// In a forked child: narrates `started` with its pid, its parent's, and the command name
/// the kernel gives it (read from /proc, which allocates; before exec, the parent's name).
///
/// # References: getpid(2), getppid(2), proc_pid_comm(5)
pub fn say_who_i_am() -> anyhow::Result<()> {
    let (me, parent) = (getpid(), getppid());
    let name = inspect(me.as_raw())?.comm;
    let text = format!("I am {me}, child of {parent}; the kernel calls me {name:?}");
    event("started")
        .field("ppid", parent.as_raw())
        .field("comm", &name)
        .say(text);
    Ok(())
}

/// After `waitpid(child)`: narrates `wait` (how the child ended) and, if /proc/<child> is
/// gone, `gone`: the wait freed the pid.
///
/// # References: waitpid(2), proc(5)
pub fn say_waited(child: Pid, ending: &Ending) {
    event("wait")
        .field("child", child.as_raw())
        .fields(ending)
        .say(format!("waitpid({child}) -> {}", ending.status));
    if !exists(child.as_raw()) {
        let text = format!("kernel says /proc/{child} is gone: the wait freed the pid");
        event("gone").field("child", child.as_raw()).say(text);
    }
}

/// Waits for `pid` (killing it on Ctrl-C: `child::wait_or_kill`) and narrates `reap`:
/// how it ended, and `why` it is ours to reap.
///
/// # References: waitpid(2)
pub fn reap(pid: Pid, why: &str) -> anyhow::Result<()> {
    let ending = child::ending(&child::wait_or_kill(pid)?);
    let text = format!("waitpid({pid}) -> {}: {why}", ending.status);
    event("reap")
        .field("child", pid.as_raw())
        .fields(ending)
        .say(text);
    Ok(())
}

/// Narrates orphan's `adopted`: the kernel's answer (/proc's PPid) to who the orphan's
/// parent is now, and whether that is the demo.
pub fn say_adopted(orphan: Pid, adopter: i32, adopter_name: &str, demo: Pid) {
    let who = match adopter == demo.as_raw() {
        true => "me, the subreaper",
        false => "not me",
    };
    event("adopted")
        .field("child", orphan.as_raw())
        .field("ppid", adopter)
        .field("comm", adopter_name)
        .say(format!(
            "kernel says {orphan}'s parent is now {adopter} ({adopter_name}): {who}"
        ));
}

/// Narrates orphan's `hold`: how long the adopted orphan is kept alive, and the ps command
/// that shows it.
pub fn say_holding_orphan(orphan: Pid, hold: Duration) {
    let seconds = hold.as_secs_f64();
    let look = format!("see it with:  ps -o pid,ppid,stat,cmd -p {orphan}");
    let text = format!("keeping the orphan alive {seconds}s; {look}");
    let held = event("hold").field("child", orphan.as_raw());
    held.field("seconds", seconds).say(text);
}

/// Narrates orphan's `summary`: the orphan, its parent before and after, the adopter's
/// name, and the subreaper (the demo's pid) if there was one.
pub fn say_orphan_summary(
    orphan: Pid,
    parent: Pid,
    adopter: i32,
    name: &str,
    subreaper: Option<i32>,
) {
    event("summary")
        .field("child", orphan.as_raw())
        .field("parent_before", parent.as_raw())
        .field("parent_after", adopter)
        .field("adopter", name)
        .field("subreaper", subreaper)
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(format!(
            "summary: orphan {orphan} went from parent {parent} to {adopter} ({name})"
        ));
}

/// Reaps every child left (they are dead or killed): `waitpid(-1, WNOHANG)` until ECHILD,
/// waiting 5 ms whenever one still runs; returns how many. The sigchld programs' cleanup.
///
/// # References: waitpid(2)
pub fn reap_every_child_left() -> anyhow::Result<usize> {
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => reaped += 1,
            Err(Errno::ECHILD) => return Ok(reaped),
            Err(Errno::EINTR) => {}
            Err(error) => return Err(anyhow::Error::from(error).context("waitpid(-1, WNOHANG)")),
        }
    }
}

/// After `waitpid(-1, WNOHANG)` reaped a child: narrates `reap`, its pid and how it ended.
pub fn say_reaped_any(status: &WaitStatus) {
    let pid = status.pid().expect("an ended child has a pid");
    let ending = child::ending(status);
    let text = format!("waitpid(-1, WNOHANG) -> {pid} {}", ending.status);
    event("reap")
        .field("child", pid.as_raw())
        .fields(ending)
        .say(text);
}

/// How child_status's child ends after fork: `_exit(code)`, killed by a signal, or exec.
pub enum Fate {
    Exit(i32),
    Signal(Signal),
    Exec(Vec<String>),
}

impl Fate {
    /// From child_status's options: `--signal`, else `--exec`, else `--exit-code` (7).
    pub fn chosen(signal: Option<Signal>, exec: &[String], exit_code: Option<u8>) -> Fate {
        match (signal, exec.is_empty()) {
            (Some(signal), _) => Fate::Signal(signal),
            (None, false) => Fate::Exec(exec.to_vec()),
            (None, true) => Fate::Exit(exit_code.unwrap_or(7).into()),
        }
    }

    /// The summary's `mode`: the option that chose it.
    pub fn mode(&self) -> &'static str {
        match self {
            Fate::Exit(_) => "exit-code",
            Fate::Signal(_) => "signal",
            Fate::Exec(_) => "exec",
        }
    }
}

/// Narrates zombie's `hold`: how many zombies are kept for how long, and the ps command
/// that shows them from another terminal.
pub fn say_holding_zombies(parent: Pid, zombies: &[i32], hold: Duration) {
    let (seconds, held) = (
        hold.as_secs_f64(),
        count(zombies.len(), "zombie", "zombies"),
    );
    let look = format!("ps -o pid,ppid,stat,cmd --ppid {parent}");
    let text =
        format!("holding {held} for {seconds}s; see them from another terminal with:  {look}");
    event("hold")
        .field("pids", zombies)
        .field("seconds", seconds)
        .say(text);
}

/// Narrates zombie's `summary`: the zombies seen, the state SIGKILL left one in, and the
/// statuses waitpid collected.
pub fn say_zombie_summary(zombies: &[i32], statuses: &[Option<i32>], state_after_kill: char) {
    let reaped = statuses.len();
    event("summary")
        .field("zombies", zombies)
        .field("reaped", reaped)
        .field("statuses", statuses)
        .field("state_after_sigkill", state_after_kill.to_string())
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(format!(
            "summary: {} seen in /proc, SIGKILL left one {state_after_kill}, \
             {reaped} reaped by waitpid",
            count(zombies.len(), "zombie", "zombies")
        ));
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_zero_plural() {
        assert_eq!(super::count(1, "child", "children"), "1 child");
        assert_eq!(super::count(0, "zombie", "zombies"), "0 zombies");
        assert_eq!(super::count(3, "child", "children"), "3 children");
    }
}
