//! jobstate — a process's place in job control, as the kernel keeps it, read from /proc.
//!
//! The Job control part claims things no program output can prove: these children share
//! a process group, this process leads a session, that terminal's foreground group is
//! now this one. The kernel shows each in `/proc/<pid>/stat` — the fields `ps -o
//! pid,pgid,sid,tty,tpgid,stat` prints: the state letter (field 3), the process group
//! (5), the session (6), the controlling terminal (7, `tty_nr`: 0 for none) and that
//! terminal's foreground process group (8, `tpgid`: -1 for no terminal).

use std::time::{Duration, Instant};

use anyhow::Context;
use procfs::process::Process;
use serde::Serialize;

/// One look at a process's job-control fields in `/proc/<pid>/stat`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobView {
    /// The process id (`process` in JSON: every timeline event has its own `pid`).
    #[serde(rename = "process")]
    pub pid: i32,
    /// The state letter: S sleeping, R running, T stopped, Z zombie…
    pub state: char,
    /// The process group id (`pgid`).
    pub pgid: i32,
    /// The session id (`sid`): the pid of the session's leader.
    pub sid: i32,
    /// The controlling terminal's device number, 0 for none.
    pub tty_nr: i32,
    /// The foreground process group of the controlling terminal, -1 for none.
    pub tpgid: i32,
}

/// Reads `/proc/<pid>/stat`; fails if there is no such process.
///
/// # References: proc_pid_stat(5), credentials(7) "Process groups and sessions"
pub fn job_view(pid: i32) -> anyhow::Result<JobView> {
    let stat = Process::new(pid)
        .and_then(|process| process.stat())
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    Ok(JobView {
        pid,
        state: stat.state,
        pgid: stat.pgrp,
        sid: stat.session,
        tty_nr: stat.tty_nr,
        tpgid: stat.tpgid,
    })
}

impl JobView {
    /// The controlling terminal as `ps` names it (`pts/3`), or `?` for none.
    pub fn terminal(&self) -> String {
        let major = (self.tty_nr >> 8) & 0xfff;
        let minor = (self.tty_nr & 0xff) | ((self.tty_nr >> 12) & 0xfff00);
        match major {
            0 => "?".to_owned(),
            136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
            _ => format!("{major}:{minor}"),
        }
    }

    /// The fields as `ps -o pid,pgid,sid,tty,tpgid` shows them, on one line (the state is
    /// left out: a process just forked may still be running, or already asleep).
    pub fn line(&self) -> String {
        format!(
            "pid {} pgid {} sid {} tty {} tpgid {}",
            self.pid,
            self.pgid,
            self.sid,
            self.terminal(),
            self.tpgid
        )
    }
}

/// Reads `/proc/<pid>/stat` every millisecond until `wanted` holds, for at most `limit`.
/// Fails if the process ends (a zombie cannot change any more), on a stop signal, or
/// when the time is up — naming `what` it waited for.
pub fn wait_until(
    pid: i32,
    what: &str,
    limit: Duration,
    wanted: impl Fn(&JobView) -> bool,
) -> anyhow::Result<JobView> {
    let deadline = Instant::now() + limit;
    loop {
        crate::signals::bail_if_stopped()?;
        let view = job_view(pid)?;
        if wanted(&view) {
            return Ok(view);
        }
        anyhow::ensure!(view.state != 'Z', "{pid} ended before {what}");
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pid}: no {what} within {limit:?} ({}, state {})",
            view.line(),
            view.state
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_named_as_ps_names_them() {
        let view = |tty_nr| JobView {
            pid: 1,
            state: 'S',
            pgid: 1,
            sid: 1,
            tty_nr,
            tpgid: -1,
        };
        assert_eq!(view(0).terminal(), "?");
        assert_eq!(view(136 << 8 | 3).terminal(), "pts/3");
        assert_eq!(
            view(136 << 8 | (300 & 0xff) | ((300 & !0xff) << 12)).terminal(),
            "pts/300"
        );
        assert_eq!(view(4 << 8 | 1).terminal(), "4:1");
    }
}
