//! mqtt_workers' transcripts in the book (`book/src/patterns/transcripts/mqtt_workers*.txt`,
//! each `$ cargo run -p mqtt_workers …`) are real runs, and stay so: this test runs each
//! command again with this package's binary and fails when the output no longer has the
//! same shape (the root's check, tests/shapes/mod.rs: numbers masked, each process's lines
//! in order). The root's tests/transcripts.rs leaves them to this test: only this package
//! can rely on its binary being built.
//!
//! Book:    book/src/patterns/mqtt_workers.md

#[path = "../../../../tests/shapes/mod.rs"]
mod shapes;
#[path = "../../../../tests/util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use shapes::Target;

// ANCHOR: rerun
#[test]
fn every_transcript_of_mqtt_workers_has_the_shape_of_a_fresh_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let root = root.canonicalize().expect("the workspace's root");
    let this_package = |target: Target| -> Option<PathBuf> {
        match target {
            Target {
                package: Some("mqtt_workers"),
                bin: None | Some("mqtt_workers"),
            } => Some(PathBuf::from(env!("CARGO_BIN_EXE_mqtt_workers"))),
            _ => None, // the root package's programs: its tests/transcripts.rs runs them
        }
    };
    let checked = shapes::check_every_transcript(&root, &this_package);
    let ran: Vec<_> = (checked.ran.iter())
        .map(|file| {
            file.file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in [
        "mqtt_workers.txt",
        "mqtt_workers_kill.txt",
        "mqtt_workers_no_ledger.txt",
    ] {
        assert!(
            ran.iter().any(|file| file == name),
            "{name} was not run: {ran:?}"
        );
    }
}
// ANCHOR_END: rerun
