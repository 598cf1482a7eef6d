//! steps — the shell lab's trace, step by step, and the checks each step decides.
//!
//! Every observation is given time (the shell and its jobs are scheduled like anything
//! else on a loaded machine): a state, a group, the terminal's owner or a prompt must
//! show up within a limit, never at one instant. When a key fails to do its work (a
//! Ctrl-C that does not kill), the grader records the failure and then does the work
//! itself (SIGKILL, SIGSTOP, SIGCONT to that process), so that one mistake costs its
//! own check and the trace goes on.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Driver;
use super::plan::Step;
use super::term::{CTRL_C, CTRL_Z};
use super::{GROUP_WAIT, KEY_WAIT, PROMPT_WAIT, START, TERMINAL_WAIT};

/// The foreground job as the grader typed it: whether `fg` brought it
/// back, and the prompt count before it (the next prompt means the shell is back).
pub struct Fore {
    pub via_fg: bool,
    pub before: usize,
}

pub(super) fn signal(pid: Option<i32>, signal: Signal) {
    if let Some(pid) = pid {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

impl Driver<'_> {
    pub(super) fn step(&mut self, step: Step) {
        match step {
            Step::Fg(id) => self.foreground(id),
            Step::Bg(id, exit) => self.background(id, exit),
            Step::End(id, end) => {
                let before = self.fg.take().map_or(0, |fore| fore.before);
                signal(self.w.pid_of(id), end);
                self.w.until(KEY_WAIT, |w| w.alive(id).is_none());
                self.at_prompt(
                    "foreground",
                    before,
                    &format!("`{}` ended", self.w.hold(id)),
                );
            }
            Step::Int(id) => self.key_to_foreground(id, CTRL_C),
            Step::Tstp(id) => self.key_to_foreground(id, CTRL_Z),
            Step::Jobs => {
                let before = self.w.term.prompts;
                self.w.term.line("jobs");
                self.at_prompt("bg", before, "`jobs`");
            }
            Step::BgCmd(number, id) => self.bg(number, id),
            Step::FgCmd(number, id) => self.fg(number, id),
            Step::Pause(ms) => {
                self.w.until(Duration::from_millis(ms), |_| false);
                if let Some(id) = self.ends.filter(|&id| self.w.pid_of(id).is_none()) {
                    let why = self.w.why();
                    self.fail("no-zombie", format!("the background job `{} exit … --id {id} &` never ran, so the grader could not see it reaped{why}", self.w.helper));
                }
            }
            Step::Eof => self.finish(),
        }
    }

    fn foreground(&mut self, id: u32) {
        let line = self.w.hold(id);
        let before = self.w.term.prompts;
        self.w.term.line(&line);
        if !self.w.until(START, |w| w.alive(id).is_some()) {
            let why = self.w.why();
            self.fail("foreground", format!("`{line}` started no process within {} s: fork, then execvp the line's words{why}", START.as_secs_f32()));
            return;
        }
        self.fg = Some(Fore {
            via_fg: false,
            before,
        });
        self.own_group(id, &line);
        self.owns_terminal(id, "foreground", &line);
    }

    /// The job's process must lead a process group of its own.
    pub(super) fn own_group(&mut self, id: u32, line: &str) {
        let (shell, pid) = (self.w.shell, self.w.pid_of(id).unwrap_or(-1));
        let wait = self.grace("own-group", GROUP_WAIT);
        if !self
            .w
            .until(wait, |w| w.alive(id).is_none_or(|g| g.pgrp == pid))
        {
            let group = self.w.alive(id).map_or(-1, |g| g.pgrp);
            let whose = if group == shell {
                "the shell's process group"
            } else {
                "process group"
            };
            self.fail("own-group", format!("`{line}` (pid {pid}) ran in {whose} {group}, not in a group of its own ({pid}): call setpgid(0, 0) in the child before execvp, and setpgid(pid, pid) in the parent after fork (whichever runs first)"));
        }
        self.w.findings.pass("own-group");
    }

    /// The foreground job's group must own the terminal (and not be the shell's group).
    pub(super) fn owns_terminal(&mut self, id: u32, check: &str, line: &str) -> bool {
        let shell = self.w.shell;
        let owns = |w: &super::Watch| {
            w.alive(id)
                .is_some_and(|g| g.state != 'T' && g.pgrp != shell && w.tpgid() == g.pgrp)
        };
        if self.w.until(self.grace(check, TERMINAL_WAIT), owns) {
            self.w.findings.pass(check);
            return true;
        }
        let (pid, tpgid) = (self.w.pid_of(id).unwrap_or(-1), self.w.tpgid());
        let message = match self.w.alive(id) {
            None if pid < 0 => format!("`{line}` never started{}", self.w.why()),
            None => format!(
                "`{line}` (pid {pid}) was gone before the grader saw it own the terminal{}",
                self.w.why()
            ),
            Some(g) if g.state == 'T' => format!(
                "`{line}` (pid {pid}) stayed stopped (state T): send SIGCONT to its process group (kill(-pgid, SIGCONT)) before you wait for it"
            ),
            Some(g) if g.pgrp == shell => format!(
                "`{line}` (pid {pid}) ran in the shell's own process group {shell}, so the terminal could not be given to it alone: setpgid first, then tcsetpgrp(0, pgid)"
            ),
            Some(g) => format!(
                "while `{line}` (pid {pid}, group {}) ran in the foreground, the terminal's foreground group (tpgid, field 8 of /proc/{shell}/stat) was {tpgid}{}: give it the terminal with tcsetpgrp(0, {}) before you wait for it",
                g.pgrp,
                if tpgid == shell { ", the shell's" } else { "" },
                g.pgrp
            ),
        };
        self.fail(check, message);
        false
    }

    /// Waits for the prompt after `after`, then for the shell's group to own the terminal.
    pub(super) fn at_prompt(&mut self, check: &str, before: usize, after: &str) {
        if !self.w.until(PROMPT_WAIT, |w| w.term.prompts > before) {
            let why = self.w.why();
            self.fail(check, format!("no prompt `tsh> ` within {} s after {after}: when waitpid reports that the foreground job stopped or ended, take the terminal back and prompt (flush stdout){why}", PROMPT_WAIT.as_secs_f32()));
            // A shell waiting for a stopped job waits for ever: the grader kills those
            // jobs (as a user would from another terminal) so that the trace goes on.
            for stat in crate::observe::children(self.w.shell) {
                if stat.state == 'T' {
                    signal(Some(stat.pid), Signal::SIGKILL);
                }
            }
            self.w.until(PROMPT_WAIT, |w| w.term.prompts > before);
            return;
        }
        let shell = self.w.shell;
        if !self
            .w
            .until(self.grace(check, TERMINAL_WAIT), |w| w.tpgid() == shell)
        {
            let tpgid = self.w.tpgid();
            self.fail(check, format!("at the prompt after {after} the terminal's foreground group (tpgid) was {tpgid}, not the shell's ({shell}): take the terminal back with tcsetpgrp(0, getpgrp()) before you prompt"));
        }
        self.w.findings.pass(check);
    }
}
