//! The book's transcripts are real runs, and stay so. Each "What you will see" block is a
//! file `book/src/<part>/transcripts/<name>.txt` whose first line is `$ <command>` and the
//! rest what that command printed (stdout and stderr). This test runs every command again
//! and fails when the output no longer has the same *shape*: the same lines, in the same
//! order for each process, once pids, times and measured numbers are masked. Lines of
//! different processes may interleave differently from run to run: that is the kernel's
//! choice, not drift. (The check itself is tests/shapes/mod.rs.)
//!
//! The commands of another workspace package (`cargo run -p mqtt_workers …`) are left to
//! that package's own tests/transcripts.rs, which has its binary; this test checks that
//! the package has one. `cargo test --test transcripts` at the root runs both.
//!
//! `just transcripts` (PROCLAB_TRANSCRIPTS=overwrite) rewrites every file from a fresh run.
//! Both rerun the debug build, so a `$` line that says `--release` fails.

mod shapes;
mod util;

use std::path::{Path, PathBuf};

use shapes::{Target, claims_release, differences, runnable, shape, shapes_by_process};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binaries of this package (`cargo run --bin NAME`), as cargo built them for this test.
fn this_package(target: Target) -> Option<PathBuf> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zombie"))
        .parent()
        .expect("the binaries' directory");
    match target {
        Target {
            package: None | Some("proclab"),
            bin: Some(name),
        } => Some(bin_dir.join(name)),
        _ => None, // another package's: its own tests run it
    }
}

/// The directory of the workspace package named `package`, under demos/.
fn package_dir(package: &str, dir: &Path) -> Option<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let declared = format!("name = \"{package}\"");
    if std::fs::read_to_string(&manifest).is_ok_and(|text| text.contains(&declared)) {
        return Some(dir.to_owned());
    }
    let entries = std::fs::read_dir(dir).ok()?.flatten();
    (entries.map(|entry| entry.path()))
        .filter(|path| path.is_dir())
        .find_map(|path| package_dir(package, &path))
}

#[test]
fn every_transcript_has_the_shape_of_a_fresh_run() {
    let checked = shapes::check_every_transcript(root(), &this_package);
    assert!(!checked.ran.is_empty(), "this package's transcripts ran");
    for (file, command) in checked.left {
        let file = file.strip_prefix(root()).unwrap_or(&file);
        let package = command
            .split_whitespace()
            .skip_while(|token| !matches!(*token, "-p" | "--package"))
            .nth(1)
            .unwrap_or_else(|| panic!("{}: `{command}` names no package", file.display()));
        let test = package_dir(package, &root().join("demos"))
            .map(|dir| dir.join("tests/transcripts.rs"))
            .filter(|test| test.exists())
            .unwrap_or_else(|| {
                panic!(
                    "{}: `{command}` is a run of package {package}, which has no \
                     tests/transcripts.rs to rerun it",
                    file.display()
                )
            });
        eprintln!(
            "{}: checked by {}",
            file.display(),
            test.strip_prefix(root()).unwrap_or(&test).display()
        );
    }
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
    let in_order = shapes_by_process("  0.0s [parent 1] a\n  0.1s [parent 1] b\n");
    assert_ne!(in_order, shapes_by_process(reordered));
    assert_eq!(
        differences(&in_order, &shapes_by_process(reordered)),
        "the same lines, in another order"
    );
    let one_less = shapes_by_process("  0.0s [parent 1] a\n");
    assert!(differences(&in_order, &one_less).contains("\"1x #s [parent #] b\""));
    let bin = |target: Target| match target.package {
        None => Some(Path::new("/t").join(target.bin?)),
        Some(_) => None,
    };
    assert_eq!(
        runnable(
            "cargo run -q --release --bin pipe -- --records 5 | head -1",
            &bin
        ),
        Some("/t/pipe --records 5 | head -1".to_owned())
    );
    assert_eq!(
        runnable("cargo run --bin zombie", &bin),
        Some("/t/zombie".to_owned())
    );
    // A transcript is a debug run: one that says --release is refused.
    assert!(claims_release("cargo run --release --bin pipe_bandwidth").is_some());
    assert!(claims_release("cargo run -q --bin pipe_bandwidth -- --like-dd").is_none());
    // Another package's run is left to that package's tests.
    assert_eq!(
        runnable("cargo run -p mqtt_workers -- --no-ledger", &bin),
        None
    );
}
