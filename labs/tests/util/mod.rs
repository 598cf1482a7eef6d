//! Helpers for the labs' proof: run the grader, parse its JSON Lines, look for leftovers.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub struct Manifest {
    pub lab: BTreeMap<String, Lab>,
}

#[derive(Deserialize)]
pub struct Lab {
    #[serde(default)]
    pub mutant: Vec<Mutant>,
}

#[derive(Deserialize)]
pub struct Mutant {
    pub name: String,
    pub loses: Vec<String>,
}

pub fn manifest() -> Manifest {
    toml::from_str(include_str!("../../labs.toml")).expect("labs.toml parses")
}

pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory.
    let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(made, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// The path of one of the package's binaries (cargo builds them all for this test).
pub fn bin(name: &str) -> String {
    let grade = env!("CARGO_BIN_EXE_grade");
    std::path::Path::new(grade)
        .with_file_name(name)
        .display()
        .to_string()
}

/// Runs `grade ARGS` and returns its output; every run is bounded by the grader itself.
pub fn grade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grade"))
        .args(args)
        .output()
        .expect("the grader runs")
}

#[derive(Clone, Debug)]
pub struct Run {
    pub lab: String,
    pub bin: String,
    pub seed: u64,
}

impl Run {
    pub fn program(lab: &str, bin: &str, seed: u64) -> Run {
        Run {
            lab: lab.to_string(),
            bin: bin.to_string(),
            seed,
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub exit: Option<i32>,
    pub score: u64,
    pub max_score: u64,
    pub checks: BTreeMap<String, (bool, String)>,
    pub summary_last: bool,
    pub grader_pid: u32,
    pub stderr: String,
}

impl Outcome {
    pub fn lost_checks(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, (passed, _))| !passed)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

pub fn parse(output: &Output) -> Outcome {
    let text = String::from_utf8_lossy(&output.stdout);
    let mut outcome = Outcome {
        exit: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        ..Outcome::default()
    };
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    for event in &events {
        outcome.grader_pid = event["pid"].as_u64().unwrap_or(0) as u32;
        if event["event"] == "check" {
            let id = event["check"].as_str().unwrap_or_default().to_string();
            outcome.checks.insert(
                id,
                (
                    event["passed"] == true,
                    event["message"].as_str().unwrap_or_default().to_string(),
                ),
            );
        }
    }
    if let Some(summary) = events.last() {
        outcome.summary_last = summary["event"] == "summary";
        outcome.score = summary["score"].as_u64().unwrap_or(0);
        outcome.max_score = summary["max_score"].as_u64().unwrap_or(0);
    }
    outcome
}

/// Runs every run, `at_once` at a time, each as its own grader process.
pub fn in_parallel(runs: Vec<Run>, at_once: usize) -> Vec<(Run, Outcome)> {
    let queue = Mutex::new(runs.into_iter().enumerate().collect::<Vec<_>>());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..at_once {
            scope.spawn(|| {
                loop {
                    let Some((index, run)) =
                        queue.lock().expect("no thread panics holding it").pop()
                    else {
                        break;
                    };
                    let program = bin(&format!("{}-{}", run.lab, run.bin));
                    let seed = run.seed.to_string();
                    let output =
                        grade(&[&run.lab, "--program", &program, "--seed", &seed, "--json"]);
                    done.lock().expect("no thread panics holding it").push((
                        index,
                        run,
                        parse(&output),
                    ));
                }
            });
        }
    });
    let mut done = done.into_inner().expect("no thread panicked");
    done.sort_by_key(|(index, _, _)| *index);
    done.into_iter()
        .map(|(_, run, outcome)| (run, outcome))
        .collect()
}

#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn expect(&mut self, holds: bool, run: &Run, what: &str, outcome: &Outcome) {
        if !holds {
            let checks: Vec<String> = outcome
                .checks
                .iter()
                .filter(|(_, (passed, _))| !passed)
                .map(|(id, (_, message))| format!("    {id}: {message}"))
                .collect();
            self.0.push(format!(
                "{} {} seed {}: {what}; got {}/{} exit {:?}\n{}\n    stderr: {}",
                run.lab,
                run.bin,
                run.seed,
                outcome.score,
                outcome.max_score,
                outcome.exit,
                checks.join("\n"),
                outcome.stderr.trim()
            ));
        }
    }

    pub fn check(&mut self, holds: bool, what: impl Into<String>) {
        if !holds {
            self.0.push(what.into());
        }
    }

    pub fn finish(self) {
        if self.0.is_empty() {
            println!("labs: all checks of the grader hold");
            return;
        }
        for failure in &self.0 {
            eprintln!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}

/// Text, JSON, Gradescope, Classroom and JUnit reports of one run agree on the score.
pub fn check_reports(failures: &mut Failures) {
    let program = bin("reaper-solution");
    let text = grade(&["reaper", "--program", &program, "--seed", "3"]);
    let text_out = String::from_utf8_lossy(&text.stdout);
    failures.check(
        text.status.code() == Some(0)
            && text_out.contains("statuses: OK (30/30 points)")
            && text_out.ends_with("Score: 100/100\n"),
        format!("text report: {text_out}"),
    );
    let starter = grade(&["reaper", "--program", &bin("reaper-starter"), "--seed", "3"]);
    let starter_out = String::from_utf8_lossy(&starter.stdout);
    failures.check(
        starter.status.code() == Some(1)
            && starter_out.contains("no-zombie: FAIL (0/20 points)\n    child "),
        format!("a lost check's message follows its line: {starter_out}"),
    );
    let scope = grade(&[
        "reaper",
        "--program",
        &program,
        "--seed",
        "3",
        "--format",
        "gradescope",
    ]);
    let results: Value = serde_json::from_slice(&scope.stdout).unwrap_or(Value::Null);
    failures.check(
        results["score"] == 100
            && results["tests"][0]["max_score"] == 30
            && results["tests"][0]["visibility"] == "visible",
        format!("gradescope: {results}"),
    );
    let classroom = grade(&[
        "reaper",
        "--program",
        &program,
        "--seed",
        "3",
        "--format",
        "classroom",
    ]);
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(&classroom.stdout)?;
            child.wait_with_output()
        });
    let result: Value = decoded
        .ok()
        .and_then(|output| serde_json::from_slice(&output.stdout).ok())
        .unwrap_or(Value::Null);
    failures.check(
        result["status"] == "pass"
            && result["max_score"] == 100
            && result["tests"][1]["status"] == "pass"
            && result["tests"][1]["score"] == 20,
        format!("classroom: {result}"),
    );
    let junit = grade(&[
        "reaper",
        "--program",
        &bin("reaper-starter"),
        "--seed",
        "3",
        "--format",
        "junit",
    ]);
    let junit_out = String::from_utf8_lossy(&junit.stdout);
    failures.check(
        junit_out.contains("<testsuite name=\"reaper\" tests=\"6\" failures=\"4\"")
            && junit_out.contains("<failure message=\"child "),
        format!("junit: {junit_out}"),
    );
}

/// Bad usage exits 2; seeds are per student and a TA's --seed wins; --answers and hint.
pub fn check_usage(failures: &mut Failures) {
    failures.check(
        grade(&["no-such-lab"]).status.code() == Some(2),
        "an unknown lab is bad usage (2)",
    );
    failures.check(
        grade(&["reaper", "--format", "pdf"]).status.code() == Some(2),
        "an unknown format is bad usage (2)",
    );
    let hint = grade(&["hint", "reaper"]);
    failures.check(
        hint.status.success() && String::from_utf8_lossy(&hint.stdout).contains("WNOHANG"),
        "grade hint reaper names WNOHANG",
    );
    let answers = |args: &[&str]| String::from_utf8_lossy(&grade(args).stdout).into_owned();
    let alice = answers(&[
        "reaper",
        "--answers",
        "--student",
        "alice",
        "--salt",
        "fall",
    ]);
    failures.check(
        alice
            == answers(&[
                "reaper",
                "--answers",
                "--student",
                "alice",
                "--salt",
                "fall",
            ]),
        "a student's workload is the same every time",
    );
    failures.check(
        alice != answers(&["reaper", "--answers", "--student", "bob", "--salt", "fall"]),
        "two students get different workloads",
    );
    failures.check(
        alice
            != answers(&[
                "reaper",
                "--answers",
                "--student",
                "alice",
                "--salt",
                "spring",
            ]),
        "the salt changes the workload",
    );
    failures.check(
        answers(&["reaper", "--answers", "--student", "alice", "--seed", "4"])
            == answers(&["reaper", "--answers", "--seed", "4"]),
        "a TA's --seed wins over --student",
    );
    failures.check(
        alice.contains("<pid> exit") || alice.contains("<pid> signal"),
        format!("--answers shows the expected lines: {alice}"),
    );
}

/// A student's file is built offline against the pinned crates; a directory gives a CSV.
pub fn check_submissions(failures: &mut Failures) {
    let dir = std::env::temp_dir().join(format!("proclab-labs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let labs = concat!(env!("CARGO_MANIFEST_DIR"), "/reaper");
    std::fs::copy(format!("{labs}/solution.rs"), dir.join("alice.rs")).expect("copy");
    std::fs::copy(format!("{labs}/starter.rs"), dir.join("bob.rs")).expect("copy");
    std::fs::write(dir.join("carol.rs"), "fn main() { this does not compile }").expect("write");
    std::fs::write(dir.join("dave.rs"), FORK_BOMB).expect("write");
    std::fs::write(
        dir.join("erin.rs"),
        late_reporter(&format!("{labs}/solution.rs")),
    )
    .expect("write");
    let started = Instant::now();
    let csv = grade(&[
        "reaper",
        "--dir",
        &dir.display().to_string(),
        "--format",
        "csv",
        "--seed",
        "2",
    ]);
    let rows = String::from_utf8_lossy(&csv.stdout).into_owned();
    let lines: Vec<&str> = rows.lines().collect();
    failures.check(
        csv.status.code() == Some(1) && lines.len() == 6,
        format!(
            "csv: one header and a row per file: {rows} {}",
            String::from_utf8_lossy(&csv.stderr)
        ),
    );
    failures.check(
        lines
            .first()
            .is_some_and(|header| header.starts_with("submission,seed,score,max_score,statuses,")),
        format!("csv header: {rows}"),
    );
    failures.check(
        lines.iter().any(|row| row.contains("alice.rs\",2,100,100")),
        format!("alice's solution scores full: {rows}"),
    );
    failures.check(
        lines.iter().any(|row| row.contains("bob.rs\",2,25,100")),
        format!("bob's starter scores 25: {rows}"),
    );
    failures.check(
        lines.iter().any(|row| row.contains("carol.rs\",2,0,100")),
        format!("carol's file does not build: 0 points: {rows}"),
    );
    let bomb = lines.iter().find(|row| row.contains("dave.rs\""));
    failures.check(
        bomb.is_some_and(|row| !row.contains(",2,100,100")),
        format!("dave's fork bomb is stopped and loses points: {rows}"),
    );
    failures.check(
        lines.iter().any(|row| row.contains("erin.rs\",2,100,100")),
        format!("erin reaps at once and writes her lines 100 ms later: full score: {rows}"),
    );
    failures.check(
        started.elapsed() < Duration::from_secs(120),
        "the fork bomb did not hold the grader up",
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "labs: --dir with 5 submissions built and graded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A bounded fork bomb (300 sleeping children; an unbounded one would hurt the machine if
/// the grader failed): the grader must kill the group above the lab's process bound, and
/// the nothing-left check then finds none of them adopted by this runner.
/// The solution, changed to write each batch of lines 100 ms after reaping it: the
/// contract allows it, and the grader must wait for the lines rather than race them.
fn late_reporter(solution: &str) -> String {
    let text = std::fs::read_to_string(solution).expect("the reaper solution");
    let late = text
        .replacen(
            "report.write_all(line.as_bytes())?;",
            "late.push(line);",
            1,
        )
        .replacen(
            "        // ANCHOR: reap\n",
            "        let mut late = Vec::new();\n",
            1,
        )
        .replacen(
            "        // ANCHOR_END: reap\n",
            "        if !late.is_empty() {\n            std::thread::sleep(std::time::Duration::from_millis(100));\n            report.write_all(late.concat().as_bytes())?;\n        }\n",
            1,
        );
    assert_eq!(
        late.matches("late").count(),
        4,
        "the solution's reap loop changed"
    );
    late
}

const FORK_BOMB: &str = r#"
fn main() {
    for _ in 0..300 {
        // SAFETY: single-threaded; the child only sleeps and calls _exit.
        if unsafe { libc::fork() } == 0 {
            std::thread::sleep(std::time::Duration::from_secs(30));
            unsafe { libc::_exit(0) };
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(30));
}
"#;

/// Nothing of any run is left: no child of this runner (the subreaper), no scratch dir,
/// no shared-memory region or queue of any grader that ran.
pub fn check_nothing_left(failures: &mut Failures, finished: &[(Run, Outcome)]) {
    std::thread::sleep(Duration::from_millis(50));
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", std::process::id()))
            .unwrap_or_default();
    failures.check(
        children.trim().is_empty(),
        format!("processes left behind, adopted by the test: {children}"),
    );
    for (run, outcome) in finished {
        let pid = outcome.grader_pid;
        failures.check(
            pid != 0,
            format!("{} {}: no pid in the report", run.lab, run.bin),
        );
        failures.check(
            !std::path::Path::new(&format!("/tmp/proclab-lab-{pid}")).exists(),
            format!("{} {}: scratch dir left", run.lab, run.bin),
        );
        for dir in ["/dev/shm", "/dev/mqueue"] {
            let left = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| {
                    entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with(&format!("proclab-lab-{pid}-"))
                });
            failures.check(
                !left,
                format!("{} {}: an IPC object left in {dir}", run.lab, run.bin),
            );
        }
    }
}
