//! cli — the grader's command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Grade a proclab lab by watching the kernel: `grade reaper`, `grade hint reaper`.
///
/// Exit status: 0 at full marks, 1 when points are lost, 2 for bad usage.
#[derive(Parser)]
#[command(name = "grade")]
pub struct Args {
    /// The lab (reaper, pipeline, lock, pool, mq_prio, shell), `hint <lab>`, or `list`.
    #[arg(required = true, num_args = 1..=2)]
    pub lab: Vec<String>,

    /// A student's source file: built against the labs' pinned libc and nix.
    /// Default: labs/<lab>/starter.rs, the file a student edits.
    #[arg(long, conflicts_with_all = ["program", "dir"])]
    pub submission: Option<PathBuf>,

    /// A program already built.
    #[arg(long, conflicts_with = "dir")]
    pub program: Option<PathBuf>,

    /// Grade every *.rs in this directory (one row per file; use with --format csv).
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// The workload's seed; wins over --student (a TA's override).
    #[arg(long)]
    pub seed: Option<u64>,

    /// The student's id: the seed is a hash of it and the course salt.
    #[arg(long)]
    pub student: Option<String>,

    /// The course salt for --student.
    #[arg(long, env = "PROCLAB_COURSE_SALT", default_value = "proclab")]
    pub salt: String,

    /// Print what the grader expects for the seed, and run nothing.
    #[arg(long)]
    pub answers: bool,

    /// JSON Lines in proclab's timeline format (same as --format json).
    #[arg(long)]
    pub json: bool,

    /// The report's format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// Gradescope's results.json.
    Gradescope,
    /// GitHub Classroom's result: base64 JSON.
    Classroom,
    Junit,
    /// One row per submission (with --dir).
    Csv,
}

impl Args {
    pub fn format(&self) -> Format {
        if self.json { Format::Json } else { self.format }
    }

    pub fn seed(&self) -> u64 {
        match (&self.seed, &self.student) {
            (Some(seed), _) => *seed,
            (None, Some(student)) => crate::seed::student_seed(&self.salt, student),
            (None, None) => 1,
        }
    }
}
