//! Every program command the book shows runs as shown. A transcript's command is rerun
//! and compared by tests/transcripts.rs; this test takes every other `cargo run … --bin`
//! line of the chapters' console blocks (Run it, Look for yourself, Pitfalls, Exercises)
//! and runs it with the binaries cargo built for the tests. Within two seconds it must
//! have ended with status 0 or still be running, with nothing on stderr (a renamed
//! option, a value out of range, a program that fails: each says so there); one that is
//! still running (`--hold 30`, a server) then gets Ctrl-C, as the reader would type it,
//! and must end cleanly with nothing of it left. What each command shows is checked by
//! the program's own tests, with shorter holds.

#[allow(dead_code)] // only its list of transcript files
mod shapes;
mod util;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{Scratch, eventually, markdown_files};

/// How long a command runs before it is interrupted, and how long it then has to end.
const RUN: Duration = Duration::from_secs(1);
const END: Duration = Duration::from_secs(10);

/// Commands whose lesson is a failure: what they exit with, and why.
const FAILING: &[(&str, i32, &str)] = &[(
    "--crash-at-start",
    1,
    "the pool gives up on a worker that dies right after its start, every time",
)];

/// Commands that cannot run alone, and the test that runs them instead.
const ELSEWHERE: &[(&str, &str)] = &[(
    "--port PORT",
    "a server's port: tests/prefork.rs runs the client against a server it starts",
)];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The first line of every transcript: commands tests/transcripts.rs reruns.
fn transcript_commands(src: &Path) -> Vec<String> {
    let first_line = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).expect("a transcript");
        text.lines()
            .next()
            .and_then(|l| l.strip_prefix("$ "))
            .map(str::to_owned)
    };
    shapes::transcript_files(src)
        .iter()
        .filter_map(first_line)
        .collect()
}

/// A book command: where it is, the program and its arguments.
#[derive(Debug, Clone)]
struct BookCommand {
    index: usize,
    line: String,
    program: String,
    args: Vec<String>,
}

/// `$ [...] cargo run [-q] [--release] --bin NAME [-- ARGS] [| … & # …]` lines of the
/// console blocks of `text`.
fn commands_in(text: &str, chapter: &str) -> Vec<BookCommand> {
    let mut found = Vec::new();
    let mut in_console = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        let Some(command) = line.strip_prefix("$ ").filter(|_| in_console) else {
            continue;
        };
        let Some((_, after)) = command.split_once("cargo run") else {
            continue;
        };
        let mut words = after.split_whitespace().take_while(|word| {
            !matches!(*word, "|" | "&" | "&&" | ";" | ">" | "2>&1") && !word.starts_with('#')
        });
        let mut program = None;
        while let Some(word) = words.next() {
            match word {
                "--" => break,
                "--bin" => program = words.next(),
                _ => {} // -q, --release: the test runs the binaries it has
            }
        }
        let Some(program) = program else { continue }; // `cargo run -p …`: not a --bin
        found.push(BookCommand {
            index: 0,
            line: format!("{chapter}: {}", command.trim()),
            program: program.to_owned(),
            args: words.map(str::to_owned).collect(),
        });
    }
    found
}

fn book_commands() -> Vec<BookCommand> {
    let src = root().join("book/src");
    let transcripts = transcript_commands(&src);
    let mut commands = Vec::new();
    for file in markdown_files(&src) {
        let chapter = file
            .strip_prefix(&src)
            .expect("under book/src")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).expect("a chapter");
        commands.extend(commands_in(&text, &chapter).into_iter().filter(|command| {
            !transcripts
                .iter()
                .any(|t| command.line.ends_with(t.as_str()))
        }));
    }
    for (index, command) in commands.iter_mut().enumerate() {
        command.index = index;
    }
    commands
}

/// The processes whose environment carries `marker` (this run's TMPDIR): the command's,
/// wherever they moved (their own group or session).
fn processes_with(marker: &str) -> Vec<i32> {
    let carries = |pid: &i32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
    };
    util::pids().into_iter().filter(carries).collect()
}

/// kill(2), for a process (group) that may have ended meanwhile.
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes two numbers; no memory is involved.
    unsafe { libc::kill(pid, signal) };
}

/// Runs one command as the test's header says; the problem, if any, in one line.
fn try_command(command: &BookCommand, bin_dir: &Path) -> Result<(), String> {
    let scratch = Scratch::new(&format!("book-{}-{}", command.program, command.index));
    let tmpdir = scratch.0.join("tmp");
    std::fs::create_dir(&tmpdir).expect("the command's TMPDIR");
    // A path the book gives for a FIFO: a FIFO of the test's, at the same name.
    let args: Vec<String> = command
        .args
        .iter()
        .map(|arg| match arg.strip_prefix("/tmp/") {
            Some(name) => scratch.0.join(name).display().to_string(),
            None => arg.clone(),
        })
        .collect();
    for arg in command
        .args
        .iter()
        .filter_map(|arg| arg.strip_prefix("/tmp/"))
    {
        let path = scratch.0.join(arg);
        if !path.exists() {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        }
    }
    let mut child = Command::new(bin_dir.join(&command.program))
        .args(&args)
        .env("TMPDIR", &tmpdir)
        .process_group(0) // Ctrl-C goes to the group, as a terminal sends it
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("spawn: {error}"))?;
    let expected = FAILING
        .iter()
        .find(|(text, _, _)| command.line.contains(text));
    let run = if expected.is_some() { END } else { RUN }; // a failure is let happen
    let started = Instant::now();
    let mut status = None;
    while status.is_none() && started.elapsed() < run {
        std::thread::sleep(Duration::from_millis(20));
        status = child.try_wait().expect("try_wait");
    }
    let interrupted = status.is_none();
    if interrupted {
        kill(-(child.id() as i32), libc::SIGINT);
        let deadline = Instant::now() + END;
        while status.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            status = child.try_wait().expect("try_wait");
        }
    }
    let marker = format!("TMPDIR={}", tmpdir.display());
    let Some(status) = status else {
        for pid in processes_with(&marker) {
            kill(pid, libc::SIGKILL);
        }
        child.wait().ok();
        return Err(format!("still running {END:?} after Ctrl-C"));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut stderr).ok();
    let left = processes_with(&marker);
    match expected {
        Some((_, code, _)) if status.code() != Some(*code) => {
            return Err(format!("{status}, not exit {code}: {}", stderr.trim()));
        }
        Some(_) => {} // its one-line error is on stderr
        None if !(status.success() || interrupted && status.signal() == Some(libc::SIGINT)) => {
            return Err(format!("{status}: {}", stderr.trim()));
        }
        None if !stderr.trim().is_empty() => return Err(format!("stderr: {}", stderr.trim())),
        None => {}
    }
    let emptied = eventually(Duration::from_secs(2), || {
        processes_with(&marker).is_empty()
    });
    if !emptied {
        return Err(format!("left processes {left:?}"));
    }
    Ok(())
}

#[test]
fn every_program_command_of_the_book_runs_as_shown() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zombie"))
        .parent()
        .expect("the binaries");
    let (commands, skipped): (Vec<_>, Vec<_>) = book_commands().into_iter().partition(|command| {
        !ELSEWHERE
            .iter()
            .any(|(text, _)| command.line.contains(text))
    });
    assert!(
        commands.len() > 40,
        "found {} commands: {commands:#?}",
        commands.len()
    );
    for command in &skipped {
        let (_, why) = ELSEWHERE
            .iter()
            .find(|(text, _)| command.line.contains(text))
            .expect("listed");
        println!("not run here: {} ({why})", command.line);
    }
    // Six at a time: most of them only wait (--hold) on a machine with two cores.
    let queue = std::sync::Mutex::new(commands.clone());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").pop(); // the lock ends here
                    let Some(command) = next else { break };
                    let started = Instant::now();
                    let result = try_command(&command, bin_dir);
                    println!(
                        "{:5.1} s  {}",
                        started.elapsed().as_secs_f64(),
                        command.line
                    );
                    if let Err(problem) = result {
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("{}: {problem}", command.line));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "{} of {} commands:\n{}",
        failures.len(),
        commands.len(),
        failures.join("\n")
    );
}

#[test]
fn commands_are_read_as_a_shell_would_split_them() {
    let text = "```console\n$ cargo run -q --release --bin pipe -- --records 2 | head -1 # note\n\
                $ strace -f cargo run --bin zombie -- --hold 30 &\n$ cargo run -p labs -- grade\n```\n\
                $ cargo run --bin not_console\n";
    let found = commands_in(text, "c.md");
    let got: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|c| {
            (
                c.program.as_str(),
                c.args.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("pipe", vec!["--records", "2"]),
            ("zombie", vec!["--hold", "30"])
        ]
    );
}
