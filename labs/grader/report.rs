//! report — one graded run as a list of checks with points, in the formats graders read.
//!
//! Text is gradelib's: one line per check, the message under a failed one, then
//! `Score: T/P`. JSON Lines follow proclab's timeline (t, pid, role, event), one `check`
//! event per check and a `summary` last. The course formats are in `formats`.

use serde_json::json;

use crate::checks::Findings;
use crate::manifest::Lab;
use crate::session::Cut;

pub struct Line {
    pub id: String,
    pub name: String,
    pub points: u32,
    pub max_points: u32,
    pub passed: bool,
    pub message: String,
}

pub struct Report {
    pub lab: String,
    pub seed: u64,
    /// The file or program graded.
    pub submission: String,
    pub lines: Vec<Line>,
    pub seconds: f64,
}

impl Report {
    /// Puts the manifest's points on the driver's verdicts. A check the driver never
    /// decided failed: the run was cut, or the driver stopped early.
    pub fn new(
        name: &str,
        lab: &Lab,
        seed: u64,
        submission: String,
        findings: &Findings,
        cut: Option<&Cut>,
        seconds: f64,
    ) -> Report {
        let not_reached = match cut {
            Some(Cut::TimeLimit(limit)) => {
                format!("not reached: the run passed the time limit ({limit} s) and was killed")
            }
            Some(Cut::ForkBomb(count)) => format!(
                "not reached: {count} processes at once (a fork bomb?); the group was killed"
            ),
            None => "not reached: the grader stopped before this check".to_string(),
        };
        let lines = lab
            .check
            .iter()
            .map(|check| {
                let verdict = findings
                    .0
                    .get(&check.id)
                    .cloned()
                    .unwrap_or(Err(not_reached.clone()));
                Line {
                    id: check.id.clone(),
                    name: check.name.clone(),
                    points: if verdict.is_ok() { check.points } else { 0 },
                    max_points: check.points,
                    passed: verdict.is_ok(),
                    message: verdict.err().unwrap_or_default(),
                }
            })
            .collect();
        Report {
            lab: name.to_string(),
            seed,
            submission,
            lines,
            seconds,
        }
    }

    /// A run that could not start (the submission did not build).
    pub fn failed(name: &str, lab: &Lab, seed: u64, submission: String, why: &str) -> Report {
        let mut findings = Findings::default();
        for check in &lab.check {
            findings.fail(&check.id, why);
        }
        Report::new(name, lab, seed, submission, &findings, None, 0.0)
    }

    pub fn score(&self) -> u32 {
        self.lines.iter().map(|line| line.points).sum()
    }

    pub fn max_score(&self) -> u32 {
        self.lines.iter().map(|line| line.max_points).sum()
    }

    pub fn full(&self) -> bool {
        self.score() == self.max_score()
    }

    pub fn text(&self) -> String {
        let mut out = format!("== {} (seed {}) ==\n", self.lab, self.seed);
        for line in &self.lines {
            let verdict = if line.passed { "OK" } else { "FAIL" };
            out += &format!(
                "{}: {verdict} ({}/{} points)\n",
                line.id, line.points, line.max_points
            );
            if !line.passed {
                out += &format!("    {}\n", line.message);
            }
        }
        out += &format!("Score: {}/{}\n", self.score(), self.max_score());
        out
    }

    pub fn json_lines(&self) -> String {
        let pid = std::process::id();
        let t = (self.seconds * 1e6).round() / 1e6;
        let mut out = String::new();
        for line in &self.lines {
            let event = json!({
                "t": t, "pid": pid, "role": "grader", "event": "check",
                "text": format!("{}: {}", line.id, if line.passed { "OK" } else { "FAIL" }),
                "lab": self.lab, "check": line.id, "points": line.points,
                "max_points": line.max_points, "passed": line.passed, "message": line.message,
            });
            out += &format!("{event}\n");
        }
        let summary = json!({
            "t": t, "pid": pid, "role": "grader", "event": "summary",
            "text": format!("Score: {}/{}", self.score(), self.max_score()),
            "lab": self.lab, "score": self.score(), "max_score": self.max_score(), "seed": self.seed,
        });
        out += &format!("{summary}\n");
        out
    }
}
