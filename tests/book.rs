//! The book cannot drift from the code. mdBook prints an empty block for a wrong anchor
//! and leaves the raw `{{#include}}` text for a missing file, without an error: so this
//! test resolves every include itself, and checks, keyed on each demo file's `//! Book:`
//! line, that the chapter it names includes it, that every program is a `[[bin]]` run by
//! its own test file, and that every listing stays short.

mod util;

use std::path::{Path, PathBuf};

use util::markdown_files;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `{{#include path[:selector]}}` and `{{#rustdoc_include …}}` in `text` that is not
/// escaped with a backslash: (path, selector).
fn includes(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("{{#") {
        if text[..start].ends_with('\\') {
            continue;
        }
        let rest = &text[start + 3..];
        let Some(end) = rest.find("}}") else { continue };
        let mut words = rest[..end].split_whitespace();
        if !matches!(words.next(), Some("include" | "rustdoc_include")) {
            continue;
        }
        let target = words.next().expect("an include names a file");
        match target.split_once(':') {
            Some((path, selector)) => found.push((path.to_owned(), Some(selector.to_owned()))),
            None => found.push((target.to_owned(), None)),
        }
    }
    found
}

/// The lines an anchor selects: between `ANCHOR: name` and `ANCHOR_END: name`.
fn anchored_lines<'a>(source: &'a str, anchor: &str) -> Option<Vec<&'a str>> {
    let lines: Vec<&str> = source.lines().collect();
    // As mdBook reads them: `ANCHOR: name` in any comment (`//`, `#`, `<!-- … -->`).
    let is_marker = |line: &str, marker: &str| {
        line.split_once(&format!("{marker}:"))
            .filter(|(before, _)| !before.ends_with('_')) // ANCHOR_END is not ANCHOR
            .and_then(|(_, name)| name.split_whitespace().next())
            == Some(anchor)
    };
    let start = lines.iter().position(|line| is_marker(line, "ANCHOR"))?;
    let end = start
        + lines[start..]
            .iter()
            .position(|line| is_marker(line, "ANCHOR_END"))?;
    Some(
        lines[start + 1..end]
            .iter()
            .copied()
            .filter(|line| !line.contains("ANCHOR"))
            .collect(),
    )
}

#[test]
fn every_include_resolves_to_lines() {
    let book = root().join("book/src");
    let mut checked = 0;
    for chapter in markdown_files(&book) {
        let text = std::fs::read_to_string(&chapter).expect("read chapter");
        for (path, selector) in includes(&text) {
            let file = chapter.parent().expect("chapter dir").join(&path);
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|error| panic!("{}: include {path}: {error}", chapter.display()));
            let selected: Vec<&str> = match selector.as_deref() {
                None => source.lines().collect(),
                Some(range) if range.chars().all(|c| c.is_ascii_digit() || c == ':') => {
                    let mut bounds = range.split(':');
                    let from = bounds.next().and_then(|n| n.parse().ok()).unwrap_or(1usize);
                    let to = bounds
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    source.lines().skip(from - 1).take(to + 1 - from).collect()
                }
                Some(anchor) => anchored_lines(&source, anchor).unwrap_or_else(|| {
                    panic!("{}: no anchor {anchor:?} in {path}", chapter.display())
                }),
            };
            assert!(
                selected.iter().any(|line| !line.trim().is_empty()),
                "{}: include {path}:{selector:?} yields no lines",
                chapter.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the book includes code from the demos");
}

/// The `[[bin]]` targets of the root's Cargo.toml and of the demo packages under demos/
/// (`demos/patterns/mqtt_workers/Cargo.toml`): (name, path from the root, test file).
fn bins() -> Vec<(String, String, PathBuf)> {
    let mut manifests = vec![root().join("Cargo.toml")];
    manifests.extend(files_named(&root().join("demos"), "Cargo.toml"));
    let mut found = Vec::new();
    for manifest in manifests {
        let dir = manifest.parent().expect("the package's directory");
        for (name, path) in bins_of(&manifest) {
            let path = relative(&dir.join(path));
            let test = dir.join("tests").join(format!("{name}.rs"));
            found.push((name, path, test));
        }
    }
    found
}

/// The `[[bin]]` targets of one manifest: (name, path as written).
fn bins_of(manifest: &Path) -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(manifest).expect("a Cargo.toml");
    let mut found = Vec::new();
    let mut in_bin = false;
    let value = |text: &str| {
        let text = text.trim_start().trim_start_matches('=').trim();
        text.trim_matches('"').to_owned()
    };
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            if in_bin {
                found.push((String::new(), String::new()));
            }
        } else if in_bin && let Some(rest) = line.strip_prefix("name") {
            found.last_mut().expect("in a [[bin]]").0 = value(rest);
        } else if in_bin && let Some(rest) = line.strip_prefix("path") {
            let path = rest.split('#').next().unwrap_or_default();
            found.last_mut().expect("in a [[bin]]").1 = value(path);
        }
    }
    found
}

/// Every file called `name` under `dir`, recursively.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read demos/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|file| file == name) {
            files.push(path);
        }
    }
    files
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    util::files_ending(dir, "rs")
}

/// The value of a `//! Key: value` line of a demo's header.
fn header_field(source: &str, key: &str) -> Option<String> {
    source
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .find_map(|line| line.strip_prefix("//!")?.trim().strip_prefix(key))
        .map(|value| value.trim_start_matches(':').trim().to_owned())
}

/// The files a chapter includes, as canonical paths.
fn included_files(chapter: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(chapter).expect("read chapter");
    includes(&text)
        .into_iter()
        .filter_map(|(path, _)| chapter.parent()?.join(path).canonicalize().ok())
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_demo_file_is_in_its_chapter_and_every_program_a_bin_with_a_test() {
    let bins = bins();
    assert!(bins.len() > 10, "Cargo.toml lists the programs: {bins:?}");
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).expect("SUMMARY.md");
    for file in rust_files(&root().join("demos")) {
        let name = relative(&file);
        let source = std::fs::read_to_string(&file).expect("read demo");
        // The header names the chapter, and the chapter shows the file.
        let chapter = header_field(&source, "Book")
            .unwrap_or_else(|| panic!("{name} has no `//! Book:` line in its header"));
        let chapter_path = root().join(&chapter);
        assert!(
            chapter_path.is_file(),
            "{name}: its chapter {chapter} is missing"
        );
        let in_summary = chapter.trim_start_matches("book/src/");
        assert!(
            summary.contains(&format!("]({in_summary})")),
            "{name}: {chapter} is not in book/src/SUMMARY.md"
        );
        let canonical = file.canonicalize().expect("canonical path");
        assert!(
            included_files(&chapter_path).contains(&canonical),
            "{name}: {chapter} does not {{{{#include}}}} it"
        );
        if !source.lines().any(|line| line.starts_with("fn main")) || name.contains("/tests/") {
            continue; // a module of a program, or a package's own test (harness = false)
        }
        // A program: a header that says what it demonstrates, a [[bin]], and a test.
        for key in ["Demonstrates", "Run", "Observe"] {
            assert!(
                header_field(&source, key).is_some(),
                "{name}: its header has no `//! {key}:` line"
            );
        }
        let (bin, _, test) = bins
            .iter()
            .find(|(_, path, _)| Path::new(path) == Path::new(&name))
            .unwrap_or_else(|| panic!("{name} has no [[bin]] in Cargo.toml"));
        let test_source = std::fs::read_to_string(test)
            .unwrap_or_else(|_| panic!("{name}: {} is missing", relative(test)));
        assert!(
            [
                format!("cargo_bin_cmd!(\"{bin}\")"),
                format!("cargo_bin(\"{bin}\")")
            ]
            .iter()
            .any(|call| test_source.contains(call.as_str())),
            "{} never runs {bin}",
            relative(test)
        );
    }
    for (bin, path, _) in &bins {
        assert!(
            root().join(path).is_file(),
            "[[bin]] {bin}: {path} is missing"
        );
        assert!(
            path.starts_with("demos/"),
            "[[bin]] {bin}: {path} is outside demos/"
        );
    }
}

/// A listing a student reads in one sitting: the design's limits, per file.
#[test]
fn every_demo_file_is_a_short_listing() {
    let mut program_lengths = Vec::new();
    for file in rust_files(&root().join("demos")) {
        let name = relative(&file);
        if name.contains("/tests/") {
            continue; // a demo package's own tests, not a listing
        }
        let source = std::fs::read_to_string(&file).expect("read demo");
        let lines = source.lines().count();
        let limit = if name.starts_with("demos/sched/") {
            280 // measurement programs: their table and placements
        } else if name == "demos/patterns/prefork/client.rs" {
            250 // a load client that checks every reply
        } else {
            200
        };
        assert!(lines <= limit, "{name}: {lines} lines (at most {limit})");
        if source.lines().any(|line| line.starts_with("fn main")) {
            program_lengths.push(lines);
        }
    }
    program_lengths.sort_unstable();
    // Issue 14: the median program (a file with `fn main`) is at most 150 lines.
    let median = program_lengths[program_lengths.len() / 2];
    println!("median program: {median} lines (at most {MEDIAN_LIMIT}): {program_lengths:?}");
    assert!(
        median <= MEDIAN_LIMIT,
        "the median program is {median} lines (at most {MEDIAN_LIMIT}): {program_lengths:?}"
    );
}

/// The most lines the median program may have (issue 14).
const MEDIAN_LIMIT: usize = 150;

#[test]
fn the_include_parser_sees_what_mdbook_sees() {
    let text = "a {{#include ../x.rs:fork}} b {{#rustdoc_include y.rs}} \\{{#include z.rs}}";
    assert_eq!(
        includes(text),
        vec![
            ("../x.rs".into(), Some("fork".into())),
            ("y.rs".into(), None)
        ]
    );
    let source = "x\n    // ANCHOR: fork\n    let child = fork();\n    // ANCHOR_END: fork\n";
    assert_eq!(
        anchored_lines(source, "fork"),
        Some(vec!["    let child = fork();"])
    );
    assert_eq!(anchored_lines(source, "wait"), None);
}
