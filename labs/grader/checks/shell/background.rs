//! background — the shell lab's background jobs: `cmd &` must give the prompt back at
//! once and leave the terminal to the shell (check `background`); a background job that
//! reads the terminal must be stopped by the kernel with SIGTTIN (check `ttin`).

use nix::sys::signal::Signal;

use super::plan::Kind;
use super::steps::signal;
use super::{Driver, KEY_WAIT, START, TERMINAL_WAIT};

impl Driver<'_> {
    pub(super) fn background(&mut self, id: u32, kind: Kind) {
        let helper = &self.w.helper;
        let line = match kind {
            Kind::Hold => format!("{} &", self.w.hold(id)),
            Kind::Exit(code, life) => format!("{helper} exit {code} --after {life} --id {id} &"),
            Kind::Read => format!("{helper} read --id {id} &"),
        };
        if let Kind::Exit(..) = kind {
            self.ends = Some(id);
        }
        let before = self.w.term.prompts;
        self.w.term.line(&line);
        self.w
            .until(START, |w| w.pid_of(id).is_some() && w.term.prompts > before);
        if self.w.pid_of(id).is_none() {
            let why = self.w.why();
            self.fail("background", format!("`{line}` started no process within {} s: a line ending in `&` runs like any other, without waiting{why}", START.as_secs_f32()));
            if let Kind::Read = kind {
                self.fail("ttin", format!("`{line}` never started{why}"));
            }
            return;
        }
        if self.w.term.prompts <= before {
            let why = self.w.why();
            self.fail("background", format!("no prompt within {} s of `{line}`: do not wait for a background job; print the prompt and read the next line at once{why}", START.as_secs_f32()));
        }
        self.own_group(id, &line);
        if let Kind::Hold = kind {
            self.background.push(id);
        }
        let shell = self.w.shell;
        let wait = self.grace("background", TERMINAL_WAIT);
        if !self.w.until(wait, |w| w.tpgid() == shell) {
            let tpgid = self.w.tpgid();
            self.fail("background", format!("after `{line}` the terminal's foreground group (tpgid) was {tpgid}, not the shell's ({shell}): only a foreground job gets the terminal"));
        }
        self.w.findings.pass("background");
        if let Kind::Read = kind {
            self.reader(id, &line);
        }
    }

    /// A background job that reads the terminal is stopped by the kernel (SIGTTIN).
    fn reader(&mut self, id: u32, line: &str) {
        if !self
            .w
            .until(KEY_WAIT, |w| w.alive(id).is_some_and(|g| g.state == 'T'))
        {
            let pid = self.w.pid_of(id).unwrap_or(-1);
            let message = match self.w.alive(id) {
                Some(g) if g.pgrp == self.w.tpgid() => format!(
                    "`{line}` (pid {pid}) was not stopped (state {}): it was in the terminal's foreground group, so it could read what the user types — a background job needs a group of its own that does not own the terminal",
                    g.state
                ),
                Some(g) => format!(
                    "`{line}` (pid {pid}) was not stopped 1 s after it read the terminal (state {}): the child must restore SIGTTIN to SIG_DFL before execvp",
                    g.state
                ),
                None => format!(
                    "`{line}` (pid {pid}) ended instead of stopping when it read the terminal{}",
                    self.w.why()
                ),
            };
            self.fail("ttin", message);
            // Stopped now, it cannot race the shell for what the grader types next.
            signal(self.w.pid_of(id), Signal::SIGSTOP);
        }
        self.w.findings.pass("ttin");
    }
}
