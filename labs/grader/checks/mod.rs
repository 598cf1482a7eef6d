//! checks — one file per lab: the driver that runs the workload and the checks it decides.
//!
//! A lab's driver gets the session (the sandbox), the program to run and the seed, and
//! returns a verdict per check id named in labs.toml. Points and names live in the
//! manifest; the driver only says passed or failed, and on failure what it saw and what
//! to try.

use std::collections::BTreeMap;
use std::path::Path;

use crate::session::Session;

mod lock;
mod mq_prio;
mod pipeline;
mod pool;
mod reaper;
mod shell;

/// The verdicts of one run, by check id.
#[derive(Default)]
pub struct Findings(pub BTreeMap<String, Result<(), String>>);

impl Findings {
    pub fn pass(&mut self, id: &str) {
        self.0.entry(id.to_string()).or_insert(Ok(()));
    }

    /// Records a failure; the first failure of a check is the one reported.
    pub fn fail(&mut self, id: &str, message: impl Into<String>) {
        let verdict = self.0.entry(id.to_string()).or_insert(Ok(()));
        if verdict.is_ok() {
            *verdict = Err(message.into());
        }
    }
}

/// Runs lab `lab`'s workload for `seed` against `program` and decides its checks.
pub fn grade(
    lab: &str,
    session: &mut Session,
    program: &Path,
    seed: u64,
) -> anyhow::Result<Findings> {
    match lab {
        "reaper" => reaper::grade(session, program, seed),
        "pipeline" => pipeline::grade(session, program, seed),
        "lock" => lock::grade(session, program, seed),
        "mq_prio" => mq_prio::grade(session, program, seed),
        "pool" => pool::grade(session, program, seed),
        "shell" => shell::grade(session, program, seed),
        _ => anyhow::bail!("lab {lab} is in labs.toml but has no checks file"),
    }
}

/// What the grader expects for `seed`, for a TA (OSTEP's `-c`).
pub fn answers(lab: &str, seed: u64) -> anyhow::Result<String> {
    match lab {
        "reaper" => Ok(reaper::answers(seed)),
        "pipeline" => Ok(pipeline::answers(seed)),
        "lock" => Ok(lock::answers(seed)),
        "mq_prio" => Ok(mq_prio::answers(seed)),
        "pool" => Ok(pool::answers(seed)),
        "shell" => Ok(shell::answers(seed)),
        _ => anyhow::bail!("lab {lab} is in labs.toml but has no checks file"),
    }
}
