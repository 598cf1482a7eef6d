//! The book's transcripts are real runs, and stay so. Each "What you will see" block is a
//! file `book/src/<part>/transcripts/<name>.txt` whose first line is `$ <command>` and the
//! rest what that command printed (stdout and stderr). This test runs every command again
//! and fails when the output no longer has the same *shape*: the same lines, in the same
//! order for each process, once pids, times and measured numbers are masked. Lines of
//! different processes may interleave differently from run to run: that is the kernel's
//! choice, not drift.
//!
//! `just transcripts` (PROCLAB_TRANSCRIPTS=overwrite) rewrites every file from a fresh run.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every transcript file under book/src.
fn transcript_files(dir: &Path) -> Vec<PathBuf> {
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

/// The shell command that reproduces `command` with the binaries cargo built for this test:
/// `cargo run [-q] [--release] --bin NAME [-- ARGS]` becomes `<target dir>/NAME ARGS`.
fn runnable(command: &str, bin_dir: &Path) -> String {
    let mut script = String::new();
    let mut rest = command;
    while let Some(start) = rest.find("cargo run") {
        script.push_str(&rest[..start]);
        let after = &rest[start + "cargo run".len()..];
        let end = after.find(['|', ';', '&', '>']).unwrap_or(after.len());
        let mut tokens = after[..end].split_whitespace();
        let mut name = None;
        while let Some(token) = tokens.next() {
            match token {
                "--" => break,
                "--bin" => name = tokens.next(),
                _ => {} // -q, --release: the test uses the binaries it has
            }
        }
        let name = name.unwrap_or_else(|| panic!("`{command}`: cargo run without --bin"));
        script.push_str(&bin_dir.join(name).display().to_string());
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
    script
}

/// Runs a transcript's command as a shell would, stderr merged into stdout.
fn run(command: &str) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zombie"))
        .parent()
        .expect("the binaries' directory");
    let script = format!("exec 2>&1; {}", runnable(command, bin_dir));
    let mut shell = Command::new("bash");
    shell
        .args(["-c", &script])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let output = util::output_within(shell, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("`{command}` did not finish within 30 s"));
    String::from_utf8_lossy(&output).into_owned()
}

/// A line with its numbers masked and its spacing folded: what stays the same from run to
/// run.
fn shape(line: &str) -> String {
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
fn shapes_by_process(output: &str) -> Vec<Vec<String>> {
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

fn differences(old: &[Vec<String>], new: &[Vec<String>]) -> String {
    let old: Vec<&String> = old.iter().flatten().collect();
    let new: Vec<&String> = new.iter().flatten().collect();
    let gone: Vec<_> = old
        .iter()
        .filter(|line| !new.contains(line))
        .take(5)
        .collect();
    let added: Vec<_> = new
        .iter()
        .filter(|line| !old.contains(line))
        .take(5)
        .collect();
    format!("lines no longer printed: {gone:#?}\nlines new in this run: {added:#?}")
}

#[test]
fn every_transcript_has_the_shape_of_a_fresh_run() {
    let files = transcript_files(&root().join("book/src"));
    assert!(!files.is_empty(), "the book has transcripts");
    let overwrite = std::env::var("PROCLAB_TRANSCRIPTS").is_ok_and(|v| v == "overwrite");
    let failures = Mutex::new(Vec::new());
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
                    let new_output = run(command);
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
                        new = shapes_by_process(&run(command));
                    }
                    if old != new {
                        failures.lock().expect("failures").push(format!(
                            "{}: `{command}` no longer prints what the book shows \
                             (run `just transcripts`, then read the chapter again)\n{}",
                            file.strip_prefix(root()).unwrap_or(file).display(),
                            differences(&old, &new)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn shapes_mask_numbers_and_keep_each_process_in_order() {
    assert_eq!(
        shape("  0.101s [parent 4242] waitpid(4243) -> exited with status 7"),
        "#s [parent #] waitpid(#) -> exited with status #"
    );
    let run_a = "  0.0s [parent 1] fork\n  0.1s [child  2] exit(7)\n  0.1s [child  3] exit(8)\n";
    let run_b = "  0.0s [parent 9] fork\n  0.2s [child  11] exit(8)\n  0.3s [child  10] exit(7)\n";
    assert_eq!(shapes_by_process(run_a), shapes_by_process(run_b));
    let reordered = "  0.0s [parent 1] b\n  0.1s [parent 1] a\n";
    assert_ne!(
        shapes_by_process("  0.0s [parent 1] a\n  0.1s [parent 1] b\n"),
        shapes_by_process(reordered)
    );
    let bin = Path::new("/t");
    assert_eq!(
        runnable(
            "cargo run -q --release --bin pipe -- --records 5 | head -1",
            bin
        ),
        "/t/pipe --records 5 | head -1"
    );
    assert_eq!(runnable("cargo run --bin zombie", bin), "/t/zombie");
}
