//! The book cannot drift from the code. mdBook prints an empty block for a wrong anchor
//! and leaves the raw `{{#include}}` text for a missing file, without an error: so this
//! test resolves every include itself, and checks that every demo has its chapter and its
//! test file.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read book/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "md") {
            files.push(path);
        }
    }
    files
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
    let is_marker = |line: &str, marker: &str| {
        line.trim_start().trim_start_matches("//").trim() == format!("{marker}: {anchor}")
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

/// The names of the `[[bin]]` targets in Cargo.toml.
fn bins() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn every_demo_has_a_bin_a_chapter_and_a_test() {
    let bins = bins();
    assert!(!bins.is_empty());
    for entry in std::fs::read_dir(root().join("demos")).expect("demos/") {
        let stem = entry
            .expect("entry")
            .path()
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            bins.contains(&stem),
            "demos/{stem}.rs has no [[bin]] in Cargo.toml"
        );
    }
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).expect("SUMMARY.md");
    for bin in &bins {
        let link = summary
            .lines()
            .filter_map(|line| Some(line.split_once("](")?.1.trim_end_matches(')')))
            .find(|target| {
                Path::new(target)
                    .file_stem()
                    .is_some_and(|stem| stem == bin.as_str())
            })
            .unwrap_or_else(|| panic!("{bin} has no chapter in book/src/SUMMARY.md"));
        assert!(
            root().join("book/src").join(link).is_file(),
            "{link} is missing"
        );
        assert!(
            root().join("tests").join(format!("{bin}.rs")).is_file(),
            "tests/{bin}.rs is missing"
        );
        assert!(
            root().join("demos").join(format!("{bin}.rs")).is_file(),
            "demos/{bin}.rs is missing"
        );
    }
}

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
