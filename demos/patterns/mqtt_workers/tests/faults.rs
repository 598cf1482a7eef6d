//! The fault grid of tests/faults.rs, on mqtt_workers: Ctrl-C to its group, SIGTERM,
//! SIGKILL of the master and SIGKILL of one of its processes (the broker, the desk or a
//! worker) at random moments of a default run, and then what is left. The engine is the
//! root's; this package's test runs it because only this package builds the program.
//!
//! Book:    book/src/patterns/mqtt_workers.md

#[path = "../../../../tests/faultgrid/mod.rs"]
mod faultgrid;
#[path = "../../../../tests/util/mod.rs"]
mod util;

use std::path::Path;

// ANCHOR: grid
/// The default run: the broker, the desk, four workers, 66 jobs, about half a second.
const PROGRAMS: &[faultgrid::Program] = &[("mqtt_workers", &[], 0.6)];

fn main() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mqtt_workers"))
        .parent()
        .expect("the binaries' directory");
    faultgrid::run(PROGRAMS, bin_dir);
}
// ANCHOR_END: grid
