//! keys — the shell lab's job-control steps: Ctrl-C and Ctrl-Z typed on the terminal,
//! `bg %N`, `fg %N`, and Ctrl-D at the end; the checks `ctrl-c`, `ctrl-z`, `bg`, `fg`,
//! `finish`.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::steps::{Fore, signal};
use super::term::{CTRL_C, CTRL_D};
use super::{Driver, FINISH, KEY_WAIT};
use crate::observe;

impl Driver<'_> {
    /// Ctrl-C must end the foreground job only; Ctrl-Z must stop it only. Either way the
    /// shell lives, prompts again and owns the terminal again.
    pub(super) fn key_to_foreground(&mut self, id: u32, key: u8) {
        let Some(Fore { via_fg, before }) = self.fg.take() else {
            self.w.term.key(key);
            let (check, name) = if key == CTRL_C {
                ("ctrl-c", "Ctrl-C")
            } else {
                ("ctrl-z", "Ctrl-Z")
            };
            let why = self.w.why();
            self.fail(
                check,
                format!(
                    "no foreground job to send {name} to: `{}` never started{why}",
                    self.w.hold(id)
                ),
            );
            return;
        };
        let (line, pid) = (self.w.hold(id), self.w.pid_of(id));
        let interrupt = key == CTRL_C;
        let check = match (interrupt, via_fg) {
            (true, false) => "ctrl-c",
            (false, _) => "ctrl-z",
            (true, true) => "fg",
        };
        let (name, signal_name, action) = if interrupt {
            ("Ctrl-C", "SIGINT", "ended")
        } else {
            ("Ctrl-Z", "SIGTSTP", "stopped")
        };
        self.w.term.key(key);
        let done = |w: &super::Watch| match w.alive(id) {
            None => interrupt,
            Some(g) => !interrupt && g.state == 'T',
        };
        if !self.w.until(self.grace(check, KEY_WAIT), done) {
            let state = self.w.alive(id).map_or('-', |g| g.state);
            let pid = pid.unwrap_or(-1);
            let shared = self.w.alive(id).is_some_and(|g| g.pgrp == self.w.shell);
            let message = if shared && !interrupt {
                format!(
                    "`{line}` (pid {pid}) was not stopped 1 s after Ctrl-Z (state {state}): it ran in the shell's own process group, which the kernel counts as orphaned (the shell's parent is in another session) and so discards the terminal's SIGTSTP for — give every job a process group of its own (setpgid)"
                )
            } else if interrupt || state != '-' {
                format!(
                    "`{line}` (pid {pid}) was not {action} 1 s after {name} (state {state}): the terminal sends {signal_name} to its foreground process group — the job's group must own the terminal (tcsetpgrp), and the child must restore {signal_name} to SIG_DFL before execvp (an ignored signal stays ignored across exec); the grader then {action} it itself"
                )
            } else {
                format!(
                    "`{line}` (pid {pid}) ended at {name} instead of stopping: the default action of SIGTSTP stops a process; leave it to the kernel"
                )
            };
            self.fail(check, message);
            signal(
                Some(pid),
                if interrupt {
                    Signal::SIGKILL
                } else {
                    Signal::SIGSTOP
                },
            );
            self.w.until(KEY_WAIT, done);
        }
        if !self.w.session.running() {
            let why = self.w.why();
            self.fail(check, format!("{name} ended the shell itself{why}: the shell must ignore SIGINT, SIGTSTP and SIGTTOU, and run each job in a process group of its own"));
        } else {
            self.at_prompt(
                check,
                before,
                &format!("{name} {action} the foreground job"),
            );
        }
        for other in self.background.clone() {
            let state = self.w.alive(other).map(|g| g.state);
            if state.is_none_or(|state| state == 'T') {
                let what = if state.is_none() { "ended" } else { "stopped" };
                let other_pid = self.w.pid_of(other);
                self.fail(check, format!("{name} also {what} the background job `{} &` (pid {}): it was in the terminal's foreground group — give every job a process group of its own (setpgid), and the terminal to the foreground job only", self.w.hold(other), other_pid.unwrap_or(-1)));
                signal(other_pid, Signal::SIGCONT);
            }
        }
        self.background
            .retain(|&other| self.w.alive(other).is_some());
        self.w.findings.pass(check);
    }

    /// `bg %N` continues the stopped job in the background.
    pub(super) fn bg(&mut self, number: u32, id: u32) {
        let before = self.w.term.prompts;
        let (line, pid) = (self.w.hold(id), self.w.pid_of(id).unwrap_or(-1));
        self.w.term.line(&format!("bg %{number}"));
        let running = |w: &super::Watch| w.alive(id).is_some_and(|g| g.state != 'T');
        if self.w.until(self.grace("bg", KEY_WAIT), running) {
            self.background.push(id);
        } else {
            let message = match self.w.alive(id) {
                None => format!(
                    "job %{number} (`{line}`, pid {pid}) was gone at `bg %{number}`{}",
                    self.w.why()
                ),
                Some(_) => format!(
                    "job %{number} (`{line}`, pid {pid}) was still stopped (state T) 1 s after `bg %{number}`: send SIGCONT to the job's process group (kill(-pgid, SIGCONT)) and mark it running"
                ),
            };
            self.fail("bg", message);
        }
        self.at_prompt("bg", before, &format!("`bg %{number}`"));
    }

    /// `fg %N` continues the job with the terminal; the Ctrl-C that follows must end it.
    pub(super) fn fg(&mut self, number: u32, id: u32) {
        self.background.retain(|&other| other != id);
        let before = self.w.term.prompts;
        let line = self.w.hold(id);
        self.w.term.line(&format!("fg %{number}"));
        self.fg = Some(Fore {
            via_fg: true,
            before,
        });
        self.owns_terminal(id, "fg", &format!("{line}` after `fg %{number}"));
    }

    /// Ctrl-D: the shell ends its jobs, reaps them, and exits 0; nothing is left.
    pub(super) fn finish(&mut self) {
        if !self.w.session.running() {
            let why = self.w.why();
            self.fail("finish", format!("the shell was gone before Ctrl-D{why}"));
            return;
        }
        self.w.term.key(CTRL_D);
        let exited = self.w.until(FINISH, |w| !w.session.running());
        // What the shell left: its children, now the grader's (the subreaper's).
        let left = observe::children(std::process::id() as i32);
        let message = if !exited {
            let why = self.w.why();
            format!(
                "the shell did not exit within {} s of Ctrl-D (read returned 0: end-of-file){why}: then end every job (SIGHUP and SIGCONT to each job's group, or SIGKILL), reap them all, and exit 0",
                FINISH.as_secs_f32()
            )
        } else if !left.is_empty() {
            let pids: Vec<String> = left
                .iter()
                .map(|stat| format!("{} ({})", stat.pid, stat.state))
                .collect();
            format!(
                "the shell exited but left {} of its jobs' processes, which the grader adopted: {}: kill every job's process group and waitpid each one before you exit",
                left.len(),
                pids.join(", ")
            )
        } else {
            match self.w.session.status {
                Some(WaitStatus::Exited(_, 0)) | None => String::new(),
                Some(WaitStatus::Exited(_, code)) => {
                    format!("the shell exited with status {code} at end-of-file: exit 0")
                }
                Some(status) => format!("the shell ended with {status:?} at end-of-file: exit 0"),
            }
        };
        if !message.is_empty() {
            self.fail("finish", message);
        }
        self.w.findings.pass("finish");
    }
}
