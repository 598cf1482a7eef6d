//! inspect — what the kernel says about a process.
//!
//! The demos do not ask you to trust what they print about themselves: whenever they
//! claim something about a process (it is a zombie, its parent changed, it now runs
//! `echo`), they read it back from `/proc/<pid>`, the kernel's own view, through the
//! `procfs` crate. The book shows the raw files behind each field (`/proc/<pid>/stat`
//! and `/proc/<pid>/status`) so you can read them yourself with `cat`.

use std::time::{Duration, Instant};

use anyhow::Context;
use procfs::process::Process;

/// One look at a process in `/proc`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcView {
    /// The process id.
    pub pid: i32,
    /// The state letter: R, S, D, Z, T, t, X, I (see [`state_word`]).
    pub state: char,
    /// The parent's pid (PPid).
    pub ppid: i32,
    /// The command name (`comm`): the executable's file name, at most 15 bytes; it
    /// changes at exec.
    pub comm: String,
    /// Number of threads.
    pub threads: i64,
    /// Context switches the process asked for (it blocked or yielded).
    pub voluntary_switches: u64,
    /// Context switches forced on it (its time slice ended, or a more urgent task woke).
    pub involuntary_switches: u64,
    /// CPU time spent, user + system, in seconds (10 ms resolution: USER_HZ is 100).
    pub cpu_seconds: f64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
///
/// Fails if the process does not exist (it was reaped, or never existed).
///
/// # References: proc_pid_stat(5), proc_pid_status(5)
pub fn inspect(pid: i32) -> anyhow::Result<ProcView> {
    let process = Process::new(pid).with_context(|| format!("open /proc/{pid}"))?;
    let stat = process
        .stat()
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let status = process
        .status()
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let ticks = procfs::ticks_per_second() as f64;
    Ok(ProcView {
        pid,
        state: stat.state,
        ppid: stat.ppid,
        comm: stat.comm,
        threads: stat.num_threads,
        voluntary_switches: status.voluntary_ctxt_switches.unwrap_or(0),
        involuntary_switches: status.nonvoluntary_ctxt_switches.unwrap_or(0),
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
    })
}

/// True while the kernel still has an entry for `pid` — running, stopped or zombie.
/// After the parent's wait the entry is gone.
///
/// # References: proc(5)
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The word for a state letter of `/proc/<pid>/stat`, as proc_pid_stat(5) names it.
pub fn state_word(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'Z' => "zombie",
        'T' => "stopped",
        't' => "tracing stop",
        'X' => "dead",
        'I' => "idle",
        'P' => "parked",
        _ => "unknown",
    }
}

impl ProcView {
    /// "Z (zombie)".
    pub fn state_in_words(&self) -> String {
        format!("{} ({})", self.state, state_word(self.state))
    }
}

/// Reads `/proc/<pid>` every millisecond until the process is in `state` (such as 'Z'),
/// for at most `limit`.
///
/// # References: proc_pid_stat(5)
pub fn wait_for_state(pid: i32, state: char, limit: Duration) -> anyhow::Result<ProcView> {
    let deadline = Instant::now() + limit;
    loop {
        let view = inspect(pid)?;
        if view.state == state {
            return Ok(view);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{pid} is still {} after {limit:?}, not {state}",
                view.state_in_words()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True if `pid` exists and is not a zombie: it can still run. (A zombie is dead; only
/// its entry remains.)
pub fn running(pid: i32) -> bool {
    inspect(pid).is_ok_and(|view| view.state != 'Z' && view.state != 'X')
}

/// Where `pid` sleeps in the kernel (`/proc/<pid>/wchan`: a kernel function name such as
/// `pipe_write`, or `0` when it runs), or None if unreadable.
///
/// # References: proc_pid_wchan(5)
pub fn wchan(pid: i32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    Some(name.trim().to_owned())
}

/// What descriptor `fd` of process `pid` refers to, as `ls -l /proc/<pid>/fd` shows it
/// (`pipe:[1234]`, `/dev/pts/0`…), or None.
///
/// # References: proc_pid_fd(5)
pub fn fd_target(pid: i32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// Nanoseconds `pid` (a process, or the thread `pid`) has spent on a CPU, from
/// `/proc/<pid>/schedstat`: the scheduler's own clock, not the 10 ms ticks of `stat`.
///
/// # References: proc_pid_stat(5), Documentation/scheduler/sched-stats.rst
pub fn cpu_ns(pid: i32) -> anyhow::Result<u64> {
    let process = Process::new(pid).with_context(|| format!("open /proc/{pid}"))?;
    let schedstat = process
        .schedstat()
        .with_context(|| format!("read /proc/{pid}/schedstat"))?;
    Ok(schedstat.sum_exec_runtime)
}

/// Voluntary and involuntary context switches of thread `tid` of process `pid`, from
/// `/proc/<pid>/task/<tid>/status` (for a single-threaded process, `tid` = `pid`).
///
/// # References: proc_pid_status(5) `voluntary_ctxt_switches`
pub fn thread_switches(pid: i32, tid: i32) -> anyhow::Result<(u64, u64)> {
    let status = Process::new(pid)
        .and_then(|process| process.task_from_tid(tid))
        .and_then(|task| task.status())
        .with_context(|| format!("read /proc/{pid}/task/{tid}/status"))?;
    Ok((
        status.voluntary_ctxt_switches.unwrap_or(0),
        status.nonvoluntary_ctxt_switches.unwrap_or(0),
    ))
}

/// CPU-seconds spent busy since boot — by all CPUs of the machine (`cpu` = None) or by
/// one — from `/proc/stat`: every column but idle and iowait, at 10 ms resolution. The
/// difference between two readings, minus what your own processes used, is what
/// everyone else used.
///
/// # References: proc_stat(5)
pub fn busy_cpu_seconds(cpu: Option<usize>) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let label = cpu.map_or("cpu ".to_owned(), |cpu| format!("cpu{cpu} "));
    let ticks: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix(&label))
        .with_context(|| format!("no {label:?} line in /proc/stat"))?
        .split_whitespace()
        .map_while(|field| field.parse().ok())
        .collect();
    let (idle, iowait) = (
        ticks.get(3).copied().unwrap_or(0),
        ticks.get(4).copied().unwrap_or(0),
    );
    // guest and guest_nice (columns 9 and 10) are already counted in user and nice.
    let busy = ticks.iter().take(8).sum::<u64>() - idle - iowait;
    Ok(busy as f64 / procfs::ticks_per_second() as f64)
}

/// The cpu cgroup of this process, if it is not the root one: the kernel applies
/// autogroup (one scheduling group per session) only to tasks in the root cpu group, so
/// inside a container or a systemd unit with CPU control, sessions do not matter.
///
/// # References: sched(7) "The autogroup feature", cgroups(7)
pub fn cpu_cgroup() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let controls_cpu = if controllers.is_empty() {
            // cgroup v2: the cpu controller acts on this group if it is enabled in it.
            let file = format!("/sys/fs/cgroup{path}/cgroup.controllers");
            std::fs::read_to_string(file)
                .is_ok_and(|list| list.split_whitespace().any(|name| name == "cpu"))
        } else {
            controllers.split(',').any(|controller| controller == "cpu")
        };
        (controls_cpu && path != "/").then(|| path.to_owned())
    })
}

/// Polls `pid`'s state and wchan (`/proc/<pid>/stat`, `/proc/<pid>/wchan`) every 10 ms
/// until the same answer comes twice in a row and `accept` takes it; returns it. A
/// process may sleep elsewhere for a moment, or wait for a CPU: only a steady answer says
/// what it does. Fails when a stop signal comes, or when `accept` fails.
///
/// # References: proc_pid_stat(5), proc_pid_wchan(5)
pub fn settled_state(
    pid: i32,
    mut accept: impl FnMut(char, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<(char, String)> {
    let look = || anyhow::Ok((inspect(pid)?.state, wchan(pid).unwrap_or_default()));
    let mut seen = look()?;
    loop {
        crate::signals::bail_if_stopped()?;
        std::thread::sleep(Duration::from_millis(10));
        let now = look()?;
        if now == seen && accept(now.0, &now.1)? {
            return Ok(now);
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_sees_this_test_process() {
        let me = inspect(std::process::id() as i32).expect("/proc/self exists");
        // The main thread waits for the test threads: sleeping, or running.
        assert!(matches!(me.state, 'R' | 'S'), "{}", me.state_in_words());
        assert_eq!(me.ppid, std::os::unix::process::parent_id() as i32);
        assert!(me.threads >= 1);
    }

    #[test]
    fn a_pid_that_does_not_exist_is_an_error() {
        // pid_max is at most 2^22 on Linux.
        assert!(inspect(1 << 23).is_err());
        assert!(!exists(1 << 23));
    }

    #[test]
    fn this_thread_has_run_and_switched() {
        let pid = std::process::id() as i32;
        let tid = nix::unistd::gettid().as_raw();
        assert!(cpu_ns(pid).expect("schedstat") > 0);
        std::thread::sleep(Duration::from_millis(1)); // sleeping is a voluntary switch
        assert!(thread_switches(pid, tid).expect("status").0 > 0);
        assert!(busy_cpu_seconds(None).expect("/proc/stat") > 0.0);
        assert!(busy_cpu_seconds(Some(0)).expect("/proc/stat") > 0.0);
        assert!(busy_cpu_seconds(Some(1 << 20)).is_err());
    }
}
