//! fifo: the demo makes a private FIFO, sees ENXIO, and starts fifo_reader and fifo_writer,
//! two unrelated programs that meet at the path; open() waits for the other side in either
//! order; the data arrives intact; the FIFO and its private directory are gone afterwards,
//! even after Ctrl-C or SIGTERM.

mod examples;
mod stops;
mod util;

use std::path::Path;
use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("fifo")
}

fn check_run(events: &[serde_json::Value], first: &str) {
    let summary = summary(events);
    assert_eq!(summary["first"], first);
    assert_eq!(summary["exactly_once"], true, "{summary}");
    let received = find(events, "received");
    assert_eq!(received["role"], "reader");
    assert_eq!(received["received"], 1000);
    assert_eq!(received["missing"], 0);
    assert_eq!(received["duplicates"], 0);
    assert_eq!(received["torn"], 0);
    // The side that came first waited for the other in open().
    let waits: Vec<(&str, f64)> = events
        .iter()
        .filter(|e| e["event"] == "opened")
        .map(|e| {
            (
                e["role"].as_str().expect("role"),
                e["waited_s"].as_f64().expect("seconds"),
            )
        })
        .collect();
    let waited = |role: &str| waits.iter().find(|(r, _)| *r == role).expect("opened").1;
    let second = if first == "reader" {
        "writer"
    } else {
        "reader"
    };
    assert!(
        waited(first) >= 0.2,
        "{first} waited for the other side: {waits:?}"
    );
    assert!(waited(second) < waited(first), "{waits:?}");
    // Nothing is left: not the FIFO, not its directory.
    let path = Path::new(summary["path"].as_str().expect("path"));
    assert!(
        !path.exists() && !path.parent().expect("dir").exists(),
        "{path:?} left behind"
    );
    assert_eq!(summary["dir_gone"], true);
}

#[test]
fn reader_first_waits_for_the_writer() {
    check_run(&run_json(demo(), &[]), "reader");
}

#[test]
fn writer_first_waits_for_the_reader() {
    check_run(&run_json(demo(), &["--writer-first"]), "writer");
}

#[test]
fn the_fifo_is_private_and_removed_once_both_ends_are_open() {
    let events = run_json(demo(), &[]);
    let mkfifo = find(&events, "mkfifo");
    let dir = mkfifo["dir"].as_str().expect("dir");
    assert!(dir.contains("proclab."), "{dir}");
    assert_eq!(find(&events, "unlinked")["dir_gone"], true);
    // The writer saw the name gone before it closed its end (the lines themselves may
    // print in either order: two processes).
    assert_eq!(
        find(&events, "closed")["name_gone_before_close"],
        true,
        "removed while the writer still had it open"
    );
    assert_eq!(summary(&events)["removed_while_open"], true);
    assert_eq!(find(&events, "enxio")["errno"], "ENXIO");
}

#[test]
fn reader_and_writer_are_separate_programs_of_the_demo() {
    let events = run_json(demo(), &[]);
    let demo_pid = summary(&events)["pid"].clone();
    for role in ["reader", "writer"] {
        let opened = events
            .iter()
            .find(|e| e["event"] == "opened" && e["role"] == role)
            .expect("opened");
        assert_ne!(opened["pid"], demo_pid);
        let start = events
            .iter()
            .find(|e| e["event"] == "start" && e["role"] == "demo" && e["child"] == opened["pid"]);
        assert!(start.is_some(), "the demo started the {role}");
    }
}

#[test]
fn the_first_side_is_the_fifo_reader_program_asleep_in_open() {
    let mut demo = Running::start(cargo_bin!("fifo"), &["--delay", "1"]);
    let reader = pid_of(&demo.wait_for_where("start", |e| e["of"] == "reader")["child"]);
    demo.wait_for("open");
    // Exec'd: a program of its own (the kernel names it after the file it runs), and alone
    // at the FIFO, asleep in open() until the writer comes.
    assert!(
        eventually(Duration::from_secs(2), || proc_comm(reader).as_deref()
            == Some("fifo_reader")
            && proc_wchan(reader).as_deref() == Some("wait_for_partner")),
        "{reader}: {:?} in {:?}",
        proc_comm(reader),
        proc_wchan(reader)
    );
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(summary(&events)["exactly_once"], true);
}

#[test]
fn two_runs_at_once_do_not_collide() {
    let runs: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| run_json(demo(), &[])))
        .collect();
    let paths: Vec<String> = runs
        .into_iter()
        .map(|run| {
            let events = run.join().expect("a run");
            assert_eq!(summary(&events)["exactly_once"], true);
            summary(&events)["path"].as_str().expect("path").to_owned()
        })
        .collect();
    assert_ne!(paths[0], paths[1]);
}

/// Starts the demo with a long delay (the reader waits alone in open()), stops it with
/// `stop`, and checks that it died by `signal` with its reader reaped and its FIFO gone.
fn stop_while_the_reader_waits(stop: impl FnOnce(&Running), signal: i32) {
    let mut demo = Running::start(cargo_bin!("fifo"), &["--delay", "30"]);
    let path = demo.wait_for("mkfifo")["path"]
        .as_str()
        .expect("path")
        .to_owned();
    let reader = pid_of(&demo.wait_for("start")["child"]);
    demo.wait_for("open");
    stop(&demo);
    let (status, _) = demo.finish();
    assert_stopped_cleanly(status, signal, &[reader]);
    let dir = Path::new(&path).parent().expect("dir").to_owned();
    assert!(!dir.exists(), "{dir:?} left behind");
}

#[test]
fn ctrl_c_leaves_no_process_and_no_fifo() {
    stop_while_the_reader_waits(Running::interrupt, libc::SIGINT);
}

#[test]
fn sigterm_to_the_demo_alone_ends_its_children_and_removes_the_fifo() {
    // The reader is not signalled: the demo must end it.
    stop_while_the_reader_waits(Running::terminate, libc::SIGTERM);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("fifo_reader"));
    for args in [
        &["--records", "0"][..],
        &["--delay", "x"],
        &["talker"],
        &["reader"], // the roles are programs of their own now: fifo_reader, fifo_writer
        &["--delay", "61"],
        // The old conflict (the demo's --records before a role) cannot arise any more: the
        // roles are separate programs, and a role word is an unexpected argument.
        &["--records", "5", "writer", "/tmp/x"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_missing_side_program_is_one_clear_error_and_makes_nothing() {
    // The demo alone, without fifo_reader and fifo_writer beside it: it says so before it
    // makes the FIFO (its TMPDIR stays empty) or starts anything.
    let scratch = Scratch::new("fifo-alone");
    let lonely = scratch.0.join("fifo");
    std::fs::copy(cargo_bin!("fifo"), &lonely).expect("copy the demo");
    let tmp = scratch.0.join("tmp");
    std::fs::create_dir(&tmp).expect("a TMPDIR of its own");
    let mut demo = assert_cmd::Command::new(&lonely);
    demo.env("TMPDIR", &tmp);
    let events = run_json_failing(demo, &[], "fifo_reader is missing");
    assert!(events.is_empty(), "nothing happened: {events:?}");
    let made: Vec<_> = std::fs::read_dir(&tmp).expect("read TMPDIR").collect();
    assert!(made.is_empty(), "nothing made in TMPDIR: {made:?}");
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("fifo"), &[&[], &["--json", "--writer-first"]]);
}

/// Issue 16 item 1: the first side dies before the second starts (here by `kill -9`).
/// The demo notices at once, starts no second side (whose open() would wait for ever),
/// says so in one line, exits 1 and leaves nothing.
fn first_side_killed_before_the_second_starts(first: &str, args: &[&str]) {
    let started = std::time::Instant::now();
    let mut run_args = vec!["--records", "1000000", "--delay", "3"];
    run_args.extend_from_slice(args);
    let mut demo = Running::start(cargo_bin!("fifo"), &run_args);
    let path = demo.wait_for("mkfifo")["path"]
        .as_str()
        .expect("path")
        .to_owned();
    let side = pid_of(&demo.wait_for_where("start", |e| e["of"] == first)["child"]);
    demo.wait_for_where("open", |e| e["role"] == first);
    send_signal(side, libc::SIGKILL);
    let (status, events) = demo.finish();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the demo noticed the death before the end of --delay: {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
    let starts = events.iter().filter(|e| e["event"] == "start").count();
    assert_eq!(starts, 1, "no second side was started: {events:#?}");
    assert_eq!(find(&events, "ended_early")["of"], first);
    let dir = Path::new(&path).parent().expect("dir").to_owned();
    assert!(!dir.exists(), "{dir:?} left behind");
}

#[test]
fn a_reader_killed_before_the_writer_starts_ends_the_demo_at_once() {
    first_side_killed_before_the_second_starts("reader", &[]);
}

#[test]
fn a_writer_killed_before_the_reader_starts_ends_the_demo_at_once() {
    first_side_killed_before_the_second_starts("writer", &["--writer-first"]);
}

/// Issue 16 item 1, the other window: the first side dies just as the second is started,
/// before the second's open() has met it. The second must not wait in open() for ever: the
/// demo ends it (quietly) and ends itself, leaving nothing.
#[test]
fn a_side_killed_as_the_other_starts_never_leaves_the_other_waiting() {
    for _ in 0..3 {
        let mut demo = Running::start(
            cargo_bin!("fifo"),
            &["--records", "1000000", "--delay", "0.2"],
        );
        let path = demo.wait_for("mkfifo")["path"]
            .as_str()
            .expect("path")
            .to_owned();
        let reader = pid_of(&demo.wait_for_where("start", |e| e["of"] == "reader")["child"]);
        demo.wait_for_where("start", |e| e["of"] == "writer");
        send_signal(reader, libc::SIGKILL);
        let started = std::time::Instant::now();
        let (_, events) = demo.finish();
        assert!(started.elapsed() < Duration::from_secs(5), "{events:#?}");
        let dir = Path::new(&path).parent().expect("dir").to_owned();
        assert!(!dir.exists(), "{dir:?} left behind");
    }
}

/// Issue 16 item 2: `kill -9` of the demo while a side waits in open() leaves nothing:
/// its guard removes the private directory with the FIFO in it, and the side dies with it.
#[test]
fn kill_9_of_the_demo_while_a_side_waits_in_open_leaves_no_directory() {
    for args in [&["--delay", "30"][..], &["--delay", "30", "--writer-first"]] {
        let mut demo = Running::start(cargo_bin!("fifo"), args);
        let path = demo.wait_for("mkfifo")["path"]
            .as_str()
            .expect("path")
            .to_owned();
        let side = pid_of(&demo.wait_for("start")["child"]);
        demo.wait_for("open");
        demo.kill();
        let dir = Path::new(&path).parent().expect("dir").to_owned();
        assert!(
            eventually(Duration::from_secs(3), || !dir.exists()),
            "{args:?}: {dir:?} left behind after kill -9"
        );
        assert!(
            eventually(Duration::from_secs(3), || !running(side)),
            "{side} left running"
        );
    }
}

/// Issue 16 item 7: the rendezvous is seen without busy-polling and without comparing
/// paths — a TMPDIR reached through a symbolic link (so /proc/<pid>/fd names another path)
/// used to be polled for 10 s and the FIFO removed only after both had closed it.
#[test]
fn a_tmpdir_behind_a_symlink_still_meets_at_once_and_removes_while_open() {
    let scratch = Scratch::new("fifo-symlinked-tmp");
    let real = scratch.0.join("real");
    std::fs::create_dir(&real).expect("a real TMPDIR");
    let link = scratch.0.join("link");
    std::os::unix::fs::symlink(&real, &link).expect("a symlink to it");
    let mut command = demo();
    command.env("TMPDIR", &link).timeout(Duration::from_secs(8));
    let started = std::time::Instant::now();
    let events = run_json(command, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(summary(&events)["removed_while_open"], true);
    assert_eq!(summary(&events)["exactly_once"], true);
    assert!(
        std::fs::read_dir(&real).expect("read").next().is_none(),
        "nothing left"
    );
}

/// The run's CPU time (user + system, in seconds) as `times` in bash reads it from the
/// kernel (the rusage of waited-for children: the demo, fifo_reader and fifo_writer), and
/// the run's stdout before it.
fn output_and_cpu_seconds(mut bash: assert_cmd::Command) -> (String, f64) {
    let output = bash.timeout(Duration::from_secs(20)).assert().success();
    let text = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let (timeline, times) = lines.split_at(lines.len().saturating_sub(2)); // the shell's, its children's
    let children = times.last().expect(&text);
    let seconds = |field: &str| -> f64 {
        let (minutes, seconds) = field.trim_end_matches('s').split_once('m').expect(field);
        minutes.parse::<f64>().expect(field) * 60.0 + seconds.parse::<f64>().expect(field)
    };
    let cpu = children.split_whitespace().map(seconds).sum();
    (timeline.join("\n"), cpu)
}

/// Issue 16 item 7: an empty or relative TMPDIR put the FIFO's directory in the current
/// directory. Now it is ignored, as `mkdtemp` users do: the directory is made under /tmp,
/// nothing appears in the current directory (even where the relative TMPDIR exists), and
/// nothing is left under /tmp; the rendezvous is seen at once, without busy-waiting.
#[test]
fn a_relative_or_empty_tmpdir_makes_the_directory_under_tmp_not_here() {
    for tmpdir in ["relative", ""] {
        let scratch = Scratch::new(&format!("fifo-tmpdir-{}", tmpdir.len()));
        std::fs::create_dir(scratch.0.join("relative")).expect("the relative TMPDIR exists");
        let mut bash = assert_cmd::Command::new("bash");
        bash.args([
            "-c",
            "\"$0\" --json; times",
            &cargo_bin!("fifo").to_string_lossy(),
        ]);
        bash.current_dir(&scratch.0).env("TMPDIR", tmpdir);
        let started = std::time::Instant::now();
        let (timeline, cpu) = output_and_cpu_seconds(bash);
        let wall = started.elapsed();
        let events = events(timeline.as_bytes());
        let path = Path::new(summary(&events)["path"].as_str().expect("path")).to_owned();
        let dir = path.parent().expect("the private directory");
        assert_eq!(
            dir.parent(),
            Some(Path::new("/tmp")),
            "TMPDIR={tmpdir:?}: {path:?}"
        );
        assert!(!dir.exists(), "TMPDIR={tmpdir:?}: {dir:?} left under /tmp");
        let here = |dir: &Path| std::fs::read_dir(dir).expect("read").count();
        assert_eq!(
            here(&scratch.0),
            1,
            "TMPDIR={tmpdir:?}: only `relative` here"
        );
        assert_eq!(here(&scratch.0.join("relative")), 0, "TMPDIR={tmpdir:?}");
        // The default run takes about 0.3 s, mostly asleep; a busy-poll took 10 s of CPU.
        assert!(wall < Duration::from_secs(3), "TMPDIR={tmpdir:?}: {wall:?}");
        assert!(cpu < 0.5, "TMPDIR={tmpdir:?}: {cpu} s of CPU");
    }
}

/// Issue 16 item 8: the error names the real range.
#[test]
fn a_delay_out_of_range_names_the_range() {
    for value in ["61", "4000", "1e9"] {
        run(demo(), &["--delay", value])
            .code(2)
            .stderr(contains("between 0 and 60 seconds"));
    }
}

/// Issue 16 item 8: SIGTERM to the demo in the middle of the transfer is quiet — no side
/// complains of a broken pipe.
#[test]
fn sigterm_during_the_transfer_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("fifo"),
        &["--records", "1000000", "--delay", "0"],
        "unlinked",
        &[0, 20, 100],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--writer-first"]];
    examples::assert_help_examples(cargo_bin!("fifo"), examples);
    check_run(&run_json(demo(), examples[0]), "reader");
    check_run(&run_json(demo(), examples[1]), "writer");
}
