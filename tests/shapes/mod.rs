//! The transcript check, shared by tests/transcripts.rs (the programs of the root package)
//! and demos/patterns/mqtt_workers/tests/transcripts.rs (the workspace package whose binary
//! only its own tests can rely on): find every `book/src/<part>/transcripts/<name>.txt`,
//! run its `$ <command>` again with the binaries the calling test has, and compare the
//! output's *shape* — the same lines, in the same order for each process, once pids, times
//! and measured numbers are masked.
//!
//! `PROCLAB_TRANSCRIPTS=overwrite` rewrites each file the caller can run from a fresh run.
//! A `$` line that says `--release` fails: the rerun uses the test's debug build, so the
//! file would claim an optimized run it is not (the chapters' "Run it" keep `--release`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// What a `cargo run` in a transcript's command asks for: `-p PACKAGE`, `--bin NAME`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target<'a> {
    pub package: Option<&'a str>,
    pub bin: Option<&'a str>,
}

/// Every transcript file under `dir` (book/src), sorted.
pub fn transcript_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read book/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(transcript_files(&path));
        } else if path.parent().is_some_and(|p| p.ends_with("transcripts"))
            && path.extension().is_some_and(|ext| ext == "txt")
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The shell command that reproduces `command` with the binaries the test has:
/// `cargo run [-q] [--release] [-p PACKAGE] [--bin NAME] [-- ARGS]` becomes `<binary> ARGS`,
/// the binary being what `binary` says for that target. None when `binary` has none for
/// one of the command's targets: another test runs that transcript.
pub fn runnable(command: &str, binary: &dyn Fn(Target) -> Option<PathBuf>) -> Option<String> {
    let mut script = String::new();
    let mut rest = command;
    while let Some(start) = rest.find("cargo run") {
        script.push_str(&rest[..start]);
        let after = &rest[start + "cargo run".len()..];
        let end = after.find(['|', ';', '&', '>']).unwrap_or(after.len());
        let mut tokens = after[..end].split_whitespace();
        let mut target = Target {
            package: None,
            bin: None,
        };
        while let Some(token) = tokens.next() {
            match token {
                "--" => break,
                "--bin" => target.bin = tokens.next(),
                "-p" | "--package" => target.package = tokens.next(),
                _ => {} // -q; --release: the test uses the (debug) binaries it has
            }
        }
        assert!(
            target.bin.is_some() || target.package.is_some(),
            "`{command}`: cargo run without --bin or -p"
        );
        script.push_str(&binary(target)?.display().to_string());
        for arg in tokens {
            script.push(' ');
            script.push_str(arg);
        }
        rest = &after[end..];
        if !rest.is_empty() && !rest.starts_with(' ') {
            script.push(' ');
        }
    }
    script.push_str(rest);
    Some(script)
}

/// Why a transcript's `command` cannot stand as written: a `--release` in it claims an
/// optimized run, while this test reruns (and `just transcripts` writes) the debug build.
pub fn claims_release(command: &str) -> Option<String> {
    command
        .split_whitespace()
        .any(|token| token == "--release")
        .then(|| {
            format!(
                "`{command}` says --release, but this test reruns the debug build: drop \
                 --release from the `$` line and regenerate the file"
            )
        })
}

/// Runs `script` as a shell would, in `root`, stderr merged into stdout.
fn run(root: &Path, command: &str, script: &str) -> String {
    let mut shell = Command::new("bash");
    shell
        .args(["-c", &format!("exec 2>&1; {script}")])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let output = crate::util::output_within(shell, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("`{command}` did not finish within 30 s"));
    String::from_utf8_lossy(&output).into_owned()
}

/// A line with its numbers masked and its spacing folded: what stays the same from run to
/// run.
pub fn shape(line: &str) -> String {
    let mut masked = String::new();
    let mut in_number = false;
    for c in line.chars() {
        let numeric = c.is_ascii_digit() || (in_number && c == '.');
        if numeric && !in_number {
            masked.push('#');
        } else if !numeric {
            masked.push(c);
        }
        in_number = numeric;
    }
    masked.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The output as the sequence of shapes of each process's lines (keyed by the pid in the
/// timeline's `[role pid]`, or none), in the order the processes first spoke.
pub fn shapes_by_process(output: &str) -> Vec<Vec<String>> {
    let mut order = Vec::new();
    let mut by_pid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in output.lines().filter(|line| !line.trim().is_empty()) {
        let pid = line
            .split_once('[')
            .and_then(|(_, tag)| tag.split_once(']'))
            .and_then(|(tag, _)| tag.split_whitespace().nth(1))
            .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
            .unwrap_or("")
            .to_owned();
        if !by_pid.contains_key(&pid) {
            order.push(pid.clone());
        }
        by_pid.entry(pid).or_default().push(shape(line));
    }
    let mut sequences: Vec<Vec<String>> = order
        .into_iter()
        .map(|pid| by_pid.remove(&pid).expect("listed"))
        .collect();
    sequences.sort(); // several children that do the same thing may speak in any order
    sequences
}

/// What changed: the lines printed fewer or more times than in the file (each with how many
/// fewer or more), or, when the same lines came, that their order changed.
pub fn differences(old: &[Vec<String>], new: &[Vec<String>]) -> String {
    let count = |sequences: &[Vec<String>]| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in sequences.iter().flatten() {
            *counts.entry(line.clone()).or_default() += 1;
        }
        counts
    };
    let (old, new) = (count(old), count(new));
    let fewer = |these: &BTreeMap<String, usize>, those: &BTreeMap<String, usize>| {
        (these.iter())
            .filter_map(|(line, &n)| {
                let m = those.get(line).copied().unwrap_or(0);
                (n > m).then(|| format!("{}x {line}", n - m))
            })
            .take(5)
            .collect::<Vec<_>>()
    };
    let (gone, added) = (fewer(&old, &new), fewer(&new, &old));
    if gone.is_empty() && added.is_empty() {
        return "the same lines, in another order".to_owned();
    }
    format!("lines no longer printed: {gone:#?}\nlines new in this run: {added:#?}")
}

/// What [`check_every_transcript`] did: the files it ran, and those it left to another
/// test (a `cargo run` target the caller has no binary for).
pub struct Checked {
    pub ran: Vec<PathBuf>,
    pub left: Vec<(PathBuf, String)>,
}

/// Reruns every transcript under `root`/book/src whose command `binary` can run, two at a
/// time, and panics with the differences if any no longer has the shape of its file (or,
/// with PROCLAB_TRANSCRIPTS=overwrite, rewrites each file from the fresh run).
pub fn check_every_transcript(
    root: &Path,
    binary: &(dyn Fn(Target) -> Option<PathBuf> + Sync),
) -> Checked {
    let files = transcript_files(&root.join("book/src"));
    assert!(!files.is_empty(), "the book has transcripts");
    let overwrite = std::env::var("PROCLAB_TRANSCRIPTS").is_ok_and(|v| v == "overwrite");
    let failures = Mutex::new(Vec::new());
    let checked = Mutex::new(Checked {
        ran: Vec::new(),
        left: Vec::new(),
    });
    // Two at a time: the commands are short demos, most of them waiting on the kernel.
    let queue = Mutex::new(files.iter());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let next = || queue.lock().expect("queue").next(); // the lock ends here
                while let Some(file) = next() {
                    let text = std::fs::read_to_string(file).expect("read transcript");
                    let (first, old_output) = text.split_once('\n').unwrap_or((&text, ""));
                    let command = first.strip_prefix("$ ").unwrap_or_else(|| {
                        panic!("{}: first line is `$ <command>`", file.display())
                    });
                    if let Some(why) = claims_release(command) {
                        let file = file.strip_prefix(root).unwrap_or(file);
                        let failure = format!("{}: {why}", file.display());
                        failures.lock().expect("failures").push(failure);
                        continue;
                    }
                    let Some(script) = runnable(command, binary) else {
                        let left = (file.clone(), command.to_owned());
                        checked.lock().expect("checked").left.push(left);
                        continue;
                    };
                    checked.lock().expect("checked").ran.push(file.clone());
                    let new_output = run(root, command, &script);
                    if overwrite {
                        std::fs::write(file, format!("$ {command}\n{new_output}"))
                            .expect("write transcript");
                        continue;
                    }
                    let old = shapes_by_process(old_output);
                    let mut new = shapes_by_process(&new_output);
                    if old != new {
                        // Once more before failing: on a loaded machine a `sleep` in the
                        // command can miss the `--hold` it aims at. Drift fails twice.
                        new = shapes_by_process(&run(root, command, &script));
                    }
                    if old != new {
                        failures.lock().expect("failures").push(format!(
                            "{}: `{command}` no longer prints what the book shows \
                             (run `just transcripts`, then read the chapter again)\n{}",
                            file.strip_prefix(root).unwrap_or(file).display(),
                            differences(&old, &new)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    checked.into_inner().expect("checked")
}
