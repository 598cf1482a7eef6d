//! shell — a job-control shell on a pseudo-terminal, driven like a user would.
//!
//! Contract (labs/shell/README.md): the shell reads lines from its terminal (it is the
//! session leader, the terminal its controlling terminal), prints the prompt `tsh> `,
//! runs `cmd args…` in the foreground and `cmd args… &` in the background, each job in a
//! process group of its own, the foreground one owning the terminal; builtins `jobs`,
//! `fg %N`, `bg %N`, `quit`; it reaps every job as it ends, and at end-of-file it ends
//! its jobs, reaps them and exits 0.
//!
//! The grader opens the pseudo-terminal, starts the shell on its slave side, and replays
//! a trace drawn from the seed (plan.rs: lines typed, Ctrl-C, Ctrl-Z, Ctrl-D, signals to
//! jobs, pauses). It sees: the jobs in /proc/<shell>/task/*/children, each one's state
//! and process group, the terminal's foreground group (tpgid), the prompts it reads on
//! the master side (only to know the shell is ready), and how the shell ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Findings;
use crate::session::Session;
use steps::Fore;
use term::Term;
use watch::Watch;

mod background;
mod keys;
mod plan;
mod steps;
mod term;
mod watch;

pub use plan::answers;

/// A typed line's process must appear within this; a prompt must come within this.
const START: Duration = Duration::from_millis(1500);
const PROMPT_WAIT: Duration = Duration::from_millis(1500);
/// A key's effect (a job ended or stopped), a `bg` or `fg` taking effect.
const KEY_WAIT: Duration = Duration::from_secs(1);
/// The terminal changing hands, a job's process group being set.
const TERMINAL_WAIT: Duration = Duration::from_secs(1);
const GROUP_WAIT: Duration = Duration::from_millis(500);
/// From Ctrl-D to the shell's exit.
const FINISH: Duration = Duration::from_millis(1500);

/// The trace's state: what the grader has seen, the foreground job, the background jobs
/// that must live on.
pub struct Driver<'s> {
    w: Watch<'s>,
    fg: Option<Fore>,
    background: Vec<u32>,
    /// The background job that ends by itself (the zombie test), once typed.
    ends: Option<u32>,
}

pub fn grade(session: &mut Session, program: &Path, seed: u64) -> anyhow::Result<Findings> {
    let steps = plan::plan(seed);
    let helper = session.helper.display().to_string();
    let (term, shell) = Term::start(session, program)?;
    let mut driver = Driver {
        w: Watch {
            session,
            findings: Findings::default(),
            term,
            shell,
            helper,
            seen: BTreeMap::new(),
        },
        fg: None,
        background: Vec::new(),
        ends: None,
    };
    driver.at_prompt("foreground", 0, "the shell started");
    for step in steps {
        driver.step(step);
    }
    driver.w.check_zombies();
    Ok(driver.w.findings)
}

impl Driver<'_> {
    /// Messages name the helper `lab-child`, not its whole path.
    pub(super) fn fail(&mut self, check: &str, message: String) {
        let message = message.replace(&self.w.helper, "lab-child");
        self.w.findings.fail(check, message);
    }

    /// How long to give an observation for `check`: the full time, or a short one once
    /// the check has failed (its verdict is in; the trace need not wait for it again).
    pub(super) fn grace(&self, check: &str, full: Duration) -> Duration {
        match self.w.findings.0.get(check) {
            Some(Err(_)) => full.min(Duration::from_millis(150)),
            _ => full,
        }
    }
}
