//! cli — how every demo reads its command line and reports a failure.
//!
//! Two promises of the project live here so that no demo has to remember them: bad usage
//! is one line on stderr and exit status 2 (clap's usage error, without the screenful
//! that follows it), and a runtime error is one line — the failing call and its errno —
//! with exit status 1.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;

/// Parses the command line; `--help` and `--version` print and exit 0, anything else
/// wrong prints one line and exits 2.
pub fn parse<T: Parser>() -> T {
    T::try_parse().unwrap_or_else(|error| {
        if !error.use_stderr() {
            error.exit(); // --help or --version: stdout, status 0.
        }
        // clap's first paragraph is the message (with the possible values, if any).
        let rendered = error.render().to_string();
        let message: Vec<&str> = rendered
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .map(str::trim)
            .collect();
        eprintln!("{} (try --help)", message.join(" "));
        std::process::exit(2)
    })
}

/// Reports a usage error that clap could not see (a combination of values) the way clap
/// reports its own: one line on stderr, exit status 2.
pub fn usage_error(message: &str) -> ! {
    eprintln!("error: {message} (try --help)");
    std::process::exit(2)
}

/// How every demo ends. Catches Ctrl-C, SIGTERM and SIGHUP (see
/// [`crate::signals::catch_stop_signals`]), runs `demo`, and then — once the demo has
/// cleaned up after itself, and any child it left is killed and reaped — dies by the stop
/// signal if one came, so the shell sees it was interrupted; otherwise returns the exit
/// status of [`exit_code`].
pub fn run_stoppable(demo: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    let result = crate::signals::catch_stop_signals()
        .map_err(anyhow::Error::from)
        .and_then(|()| demo());
    if let Some(stop) = crate::signals::stop_requested() {
        crate::child::end_all_children(); // whatever the demo did not reap yet
        crate::signals::die_by(stop);
    }
    exit_code(result)
}

/// Turns the demo's result into its exit status: 0, or one line on stderr and 1 — after
/// ending and reaping whatever children the failed demo still has.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            crate::child::end_all_children();
            let program = std::env::args().next().unwrap_or_default();
            let name = program.rsplit('/').next().unwrap_or("proclab");
            eprintln!("{name}: error: {error:#}{}", limit_hint(&error));
            ExitCode::FAILURE
        }
    }
}

/// Which limit a failure hit, from the kernel's own numbers: for a `fork` that failed
/// with EAGAIN, the user's RLIMIT_NPROC or the cgroup's `pids.max` (a container's limit);
/// for any call that failed with EMFILE (out of descriptors), RLIMIT_NOFILE.
///
/// # References: fork(2) ERRORS, getrlimit(2) RLIMIT_NPROC and RLIMIT_NOFILE, errno(3)
/// EMFILE, cgroups(7) pids controller
fn limit_hint(error: &anyhow::Error) -> String {
    let failed_with = |errno: nix::errno::Errno| {
        error.chain().any(|cause| {
            cause.downcast_ref::<nix::errno::Errno>() == Some(&errno)
                || cause
                    .downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    == Some(errno as i32)
        })
    };
    if failed_with(nix::errno::Errno::EMFILE) {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE);
        return match nofile {
            Ok((soft, _)) => {
                format!(" — RLIMIT_NOFILE allows {soft} open descriptors per process (ulimit -n)")
            }
            Err(_) => " — the open-descriptor limit was reached (ulimit -n)".to_owned(),
        };
    }
    let eagain = failed_with(nix::errno::Errno::EAGAIN);
    if !eagain || !format!("{error:#}").contains("fork") {
        return String::new();
    }
    let processes = processes_of_this_user();
    let nproc = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        .map(|(soft, _)| soft);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| Some(text.lines().next()?.rsplit(':').next()?.to_owned()))
        .map(|path| format!("/sys/fs/cgroup{path}"));
    let pids = cgroup.as_ref().and_then(|dir| {
        let max = std::fs::read_to_string(format!("{dir}/pids.max")).ok()?;
        let current = std::fs::read_to_string(format!("{dir}/pids.current")).ok()?;
        Some((max.trim().to_owned(), current.trim().to_owned()))
    });
    match (pids, nproc) {
        (Some((max, current)), _)
            if max != "max" && current.parse().ok() >= max.parse::<u64>().ok() =>
        {
            format!(" — the cgroup's pids.max ({max}) is reached ({current} tasks)")
        }
        (_, Ok(soft)) if soft != nix::sys::resource::RLIM_INFINITY => format!(
            " — RLIMIT_NPROC is {soft} processes for your user (ulimit -u), who runs {processes} now"
        ),
        _ => " — a process limit was reached (ulimit -u, or a cgroup's pids.max)".to_owned(),
    }
}

/// How many processes your user runs now (what RLIMIT_NPROC counts), from /proc.
fn processes_of_this_user() -> usize {
    let uid = nix::unistd::getuid().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                == Some(uid.as_str())
        })
        .count()
}

/// A clap `value_parser` for a duration in seconds, fractions allowed, from 0 to `max`
/// seconds; its error names that range (`--spread 1e9`: "not between 0 and 60 seconds").
pub fn seconds_up_to(max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |text| {
        let seconds: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        if !(0.0..=max).contains(&seconds) {
            return Err(format!("{seconds} is not between 0 and {max} seconds"));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// The path of `name`, another program of this project, built beside the running one
/// (`target/debug/`). `cargo run --bin fifo` builds `fifo` only: if `name` is missing and
/// cargo started us (it sets `CARGO` and `CARGO_MANIFEST_DIR` for `cargo run`), it is
/// built the same way first, quietly, so that `cargo run --bin fifo` works on a fresh clone.
pub fn sibling_program(name: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let me = std::env::current_exe().context("current_exe")?;
    let program = me.with_file_name(name);
    if program.is_file() {
        return Ok(program);
    }
    let missing = || anyhow::anyhow!("{} is missing: cargo build --bin {name}", program.display());
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Err(missing());
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&manifest_dir).join("target"));
    if !me.starts_with(&target_dir) {
        return Err(missing()); // a copy elsewhere: cargo would build somewhere else
    }
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--bin", name, "--manifest-path"]);
    build.arg(Path::new(&manifest_dir).join("Cargo.toml"));
    if me.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let output = build
        .output()
        .with_context(|| format!("cargo build --bin {name}"))?;
    let complaint = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "cargo build --bin {name} failed: {}",
        complaint.lines().next().unwrap_or("no message")
    );
    program
        .is_file()
        .then_some(program.clone())
        .ok_or_else(missing)
}

/// Parses the name of a signal whose default action kills a process — `KILL`, `SIGKILL`,
/// `kill` or `9` — for a clap `value_parser`. Stop, continue and ignore-by-default signals
/// (STOP, CONT, CHLD, WINCH…) are refused: the child would not die of them.
///
/// # References: signal(7) "Standard signals"
pub fn fatal_signal(name: &str) -> Result<Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let signal = match upper.parse::<i32>() {
        Ok(number) => Signal::try_from(number).ok(),
        Err(_) if upper.starts_with("SIG") => upper.parse().ok(),
        Err(_) => format!("SIG{upper}").parse().ok(),
    };
    let signal = signal.ok_or_else(|| {
        format!("no signal is called {name:?} (known: KILL, TERM, SEGV, ABRT… or a number)")
    })?;
    use Signal::*;
    if matches!(
        signal,
        SIGCHLD | SIGCONT | SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGURG | SIGWINCH
    ) {
        return Err(format!(
            "{signal} does not kill a process by default; try KILL, TERM, SEGV"
        ));
    }
    Ok(signal)
}

/// Parses a duration in seconds, fractions allowed, from 0 to one hour — for a clap
/// `value_parser` (`--hold 30`, `--hold 0.5`).
pub fn seconds(text: &str) -> Result<Duration, String> {
    seconds_up_to(3600.0)(text)
}

/// Like [`seconds`], but zero is refused: for a duration something must last
/// (`--seconds 3`).
pub fn positive_seconds(text: &str) -> Result<Duration, String> {
    let duration = seconds(text)?;
    if duration.is_zero() {
        return Err("the duration must be more than 0 seconds".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_are_read_with_or_without_sig_and_as_numbers() {
        for name in ["KILL", "kill", "SIGKILL", "9"] {
            assert_eq!(fatal_signal(name), Ok(Signal::SIGKILL), "{name}");
        }
        assert_eq!(fatal_signal("segv"), Ok(Signal::SIGSEGV));
    }

    #[test]
    fn seconds_take_fractions_within_an_hour() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        assert!(seconds("-1").is_err());
        assert!(seconds("3601").is_err());
        assert!(seconds("soon").is_err());
        assert!(seconds("NaN").is_err());
        assert!(positive_seconds("0").is_err());
        assert_eq!(seconds_up_to(60.0)("60"), Ok(Duration::from_secs(60)));
        let too_long = seconds_up_to(60.0)("1e9").expect_err("more than a minute");
        assert!(too_long.contains("between 0 and 60 seconds"), "{too_long}");
        assert_eq!(positive_seconds("0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn unknown_and_non_fatal_signals_are_refused() {
        assert!(fatal_signal("NOPE").is_err());
        assert!(fatal_signal("99").is_err());
        assert!(fatal_signal("STOP").is_err());
        assert!(fatal_signal("CHLD").is_err());
    }
}
