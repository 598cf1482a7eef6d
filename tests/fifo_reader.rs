//! fifo_reader: a program of its own that waits in open() until any writer comes — a
//! fifo_writer started by hand, or the test itself — counts the records until EOF, exits 3
//! when what came was not the records, and refuses anything that is not a FIFO.

mod examples;
mod util;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn reader() -> assert_cmd::Command {
    cargo_bin_cmd!("fifo_reader")
}

/// A fresh FIFO in a scratch directory, made with mkfifo(1).
fn scratch_fifo(name: &str) -> (Scratch, String) {
    let scratch = Scratch::new(name);
    let fifo = scratch.0.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.expect("mkfifo").success());
    let shown = fifo.display().to_string();
    (scratch, shown)
}

/// Opens `fifo` for writing as soon as a reader has it open (O_NONBLOCK: ENXIO until
/// then), so that a reader that never comes fails the test instead of hanging it.
fn open_for_writing_once_read(fifo: &Path) -> File {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let opened = File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        match opened {
            Ok(file) => return file,
            Err(error) if Instant::now() < deadline => {
                assert_eq!(error.raw_os_error(), Some(libc::ENXIO), "{error}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("no reader opened {fifo:?} within 10 s: {error}"),
        }
    }
}

#[test]
fn by_hand_a_reader_and_a_writer_meet_and_end_with_a_summary() {
    let (_scratch, fifo) = scratch_fifo("by-hand");
    let read = std::thread::spawn({
        let fifo = fifo.clone();
        move || run_json(reader(), &[&fifo])
    });
    let written = run_json(cargo_bin_cmd!("fifo_writer"), &[&fifo, "--records", "5"]);
    assert_eq!(summary(&written)["records"], 5);
    let read = read.join().expect("reader");
    assert_eq!(summary(&read)["received"], 5);
    assert_eq!(summary(&read)["missing"], 0);
}

#[test]
fn the_reader_sleeps_in_open_until_any_writer_opens() {
    let (_scratch, fifo) = scratch_fifo("any-writer");
    let mut reader = Running::start(cargo_bin!("fifo_reader"), &[&fifo]);
    reader.wait_for("open");
    let pid = reader.pid();
    assert!(
        eventually(Duration::from_secs(2), || proc_wchan(pid).as_deref()
            == Some("wait_for_partner")),
        "{pid} in {:?}",
        proc_wchan(pid)
    );
    std::thread::sleep(Duration::from_millis(200));
    drop(open_for_writing_once_read(Path::new(&fifo))); // a writer, gone at once: EOF
    let (status, events) = reader.finish();
    assert!(
        status.success(),
        "nothing was sent, nothing is missing: {status:?}"
    );
    let opened = find(&events, "opened");
    assert!(
        opened["waited_s"].as_f64().expect("seconds") >= 0.2,
        "{opened}"
    );
    assert_eq!(summary(&events)["received"], 0);
}

#[test]
fn what_is_not_records_makes_the_reader_exit_3() {
    let (_scratch, fifo) = scratch_fifo("hello");
    let read = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            run(reader(), &["--json", &fifo])
                .code(3)
                .get_output()
                .clone()
        }
    });
    let mut writer = open_for_writing_once_read(Path::new(&fifo));
    std::io::Write::write_all(&mut writer, b"hello\n").expect("write");
    drop(writer); // EOF for the reader
    let output = read.join().expect("reader");
    let events = events(&output.stdout);
    assert_eq!(summary(&events)["received"], 0);
}

#[test]
fn anything_but_a_fifo_is_refused() {
    let scratch = Scratch::new("reader-refuses");
    let dir = scratch.0.clone();
    let regular = dir.join("regular");
    std::fs::write(&regular, "not a fifo").expect("file");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&regular, &link).expect("symlink");
    let missing = dir.join("missing");
    for (path, word) in [
        (&regular, "not a FIFO"),
        (&link, "symbolic link"),
        (&dir, "directory"),
        (&missing, "missing"),
    ] {
        let shown = path.display().to_string();
        run(reader(), &[&shown])
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
    run(reader(), &["--help"])
        .success()
        .stdout(contains("FIFO"));
    for args in [
        &[][..], // no FIFO
        &["/tmp/x", "--records", "many"],
        &["/tmp/x", "--linger"], // the writer's
    ] {
        assert_usage_error(reader(), args);
    }
}

/// Issue 16 item 9: the example of --help (a FIFO made with mkfifo, then a fifo_writer in
/// another terminal) runs and shows what it promises: the reader waits in open(), then
/// counts every record once.
#[test]
fn every_help_example_shows_its_effect() {
    examples::assert_help_examples(cargo_bin!("fifo_reader"), &[&["/tmp/f"]]);
    let (_scratch, fifo) = scratch_fifo("help-example");
    let read = std::thread::spawn({
        let fifo = fifo.clone();
        move || run_json(reader(), &[&fifo])
    });
    std::thread::sleep(Duration::from_millis(300));
    run_json(cargo_bin_cmd!("fifo_writer"), &[&fifo]);
    let read = read.join().expect("reader");
    assert!(find(&read, "opened")["waited_s"].as_f64().expect("s") >= 0.2);
    assert_eq!(summary(&read)["received"], 1000);
    assert_eq!(summary(&read)["missing"], 0);
}
