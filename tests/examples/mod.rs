//! The examples a program's `--help` gives, read from the help itself, so that a test can
//! run each one and check the effect it promises (issue 16 item 9).

#![allow(dead_code)] // not every test file runs its examples through run_json

use std::path::Path;
use std::process::Command;

/// The argument lists of the `Examples:` section of `path --help`, one per example, the
/// program's name left out and any `# comment` dropped.
pub fn help_examples(path: &Path) -> Vec<Vec<String>> {
    let output = Command::new(path)
        .arg("--help")
        .output()
        .expect("--help runs");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    help.lines()
        .skip_while(|line| !line.starts_with("Example"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace().map(str::to_owned);
            assert_eq!(words.next().as_deref(), Some(name.as_str()), "{line}");
            words.collect()
        })
        .collect()
}

/// Checks that `path --help` gives exactly `expected` (each an argument list).
pub fn assert_help_examples(path: &Path, expected: &[&[&str]]) {
    let found = help_examples(path);
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|args| args.iter().map(|arg| arg.to_string()).collect())
        .collect();
    assert_eq!(
        found, expected,
        "the examples of --help; each is run by a test below"
    );
}

/// An example's arguments for `run_json`, which adds `--json` itself.
pub fn without_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .copied()
        .filter(|arg| *arg != "--json")
        .collect()
}
