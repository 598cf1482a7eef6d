//! fifo_writer: a program of its own that waits in open() until any reader comes — the
//! test itself here — writes its records whole, closes (the reader's EOF), and refuses
//! anything that is not a FIFO, leaving a regular file untouched.

mod examples;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn writer() -> assert_cmd::Command {
    cargo_bin_cmd!("fifo_writer")
}

#[test]
fn the_writer_sleeps_in_open_then_any_reader_gets_its_records_and_eof() {
    let scratch = Scratch::new("writer-any-reader");
    let fifo = scratch.0.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.expect("mkfifo").success());
    let shown = fifo.display().to_string();
    let mut writer = Running::start(cargo_bin!("fifo_writer"), &[&shown, "--records", "5"]);
    writer.wait_for("open");
    let pid = writer.pid();
    assert!(
        eventually(Duration::from_secs(2), || proc_wchan(pid).as_deref()
            == Some("wait_for_partner")),
        "{pid} in {:?}",
        proc_wchan(pid)
    );
    // The test is the reader: open (the writer is there), read to EOF.
    let bytes = std::fs::read(&fifo).expect("read the FIFO to EOF");
    assert_eq!(bytes.len(), 5 * 64, "five 64-byte records");
    assert_eq!(&bytes[..4], b"PLRC", "a record starts with its magic");
    let (status, events) = writer.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(summary(&events)["records"], 5);
}

#[test]
fn anything_but_a_fifo_is_refused() {
    let scratch = Scratch::new("writer-refuses");
    let dir = scratch.0.clone();
    let regular = dir.join("regular");
    std::fs::write(&regular, "not a fifo").expect("file");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&regular, &link).expect("symlink");
    for (path, word) in [
        (&regular, "not a FIFO"),
        (&link, "symbolic link"),
        (&dir, "directory"),
    ] {
        let shown = path.display().to_string();
        run(writer(), &[&shown])
            .code(1)
            .stderr(contains(shown.as_str()))
            .stderr(contains(word));
    }
    assert_eq!(
        std::fs::read_to_string(&regular).expect("file"),
        "not a fifo",
        "the file was not touched"
    );
}

#[test]
fn help_and_bad_arguments() {
    run(writer(), &["--help"])
        .success()
        .stdout(contains("FIFO"));
    for args in [
        &[][..], // no FIFO
        &["/tmp/x", "--records", "0"],
        &["/tmp/x", "--records", "1000001"],
    ] {
        assert_usage_error(writer(), args);
    }
}

/// Issue 16 item 9: the example of --help (a FIFO made with mkfifo, then a fifo_reader in
/// another terminal) runs and shows what it promises: the writer waits in open(), then
/// its 5 records arrive, each once.
#[test]
fn every_help_example_shows_its_effect() {
    let example = ["/tmp/f", "--records", "5"];
    examples::assert_help_examples(cargo_bin!("fifo_writer"), &[&example]);
    let scratch = Scratch::new("writer-help-example");
    let fifo = scratch.0.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let shown = fifo.display().to_string();
    let written = std::thread::spawn({
        let shown = shown.clone();
        move || run_json(writer(), &[&shown, "--records", "5"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let read = run_json(cargo_bin_cmd!("fifo_reader"), &[&shown]);
    let written = written.join().expect("writer");
    assert!(find(&written, "opened")["waited_s"].as_f64().expect("s") >= 0.2);
    assert_eq!(summary(&written)["records"], 5);
    assert_eq!(summary(&read)["received"], 5);
    assert_eq!(summary(&read)["duplicates"], 0);
}
