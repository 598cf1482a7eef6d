//! sigstate — a process's signal sets as the kernel keeps them, read from /proc.
//!
//! The Signals and Job control parts claim things about signals that no program output
//! can prove: a blocked signal waits *pending*, a handler is *installed*. The kernel shows
//! each set in `/proc/<pid>/status` as a hexadecimal mask, bit `n - 1` for signal `n`:
//! `SigPnd` (pending for the thread), `ShdPnd` (pending for the whole process: what
//! `kill` and `sigqueue` send), `SigBlk` (blocked), `SigIgn` (ignored), `SigCgt` (caught
//! by a handler). This module reads them and names the signals in them.

use anyhow::Context;

/// The signal sets of one process (its main thread), each a mask: bit `n - 1` is signal `n`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SignalSets {
    /// `SigPnd`: pending for the thread.
    pub thread_pending: u64,
    /// `ShdPnd`: pending for the process (signals sent to the pid).
    pub process_pending: u64,
    /// `SigBlk`: blocked.
    pub blocked: u64,
    /// `SigIgn`: ignored.
    pub ignored: u64,
    /// `SigCgt`: caught by a handler.
    pub caught: u64,
}

/// Reads the signal masks of `/proc/<pid>/status`.
///
/// # References: proc_pid_status(5), signal(7) "Signal mask and pending signals"
pub fn signal_sets(pid: i32) -> anyhow::Result<SignalSets> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0)
    };
    Ok(SignalSets {
        thread_pending: mask("SigPnd"),
        process_pending: mask("ShdPnd"),
        blocked: mask("SigBlk"),
        ignored: mask("SigIgn"),
        caught: mask("SigCgt"),
    })
}

/// Whether signal number `signo` is in `mask`.
pub fn contains(mask: u64, signo: i32) -> bool {
    (1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0
}

/// The names of the signals in `mask` (`SIGUSR1`, `SIGRTMIN+1`…), in number order.
pub fn names(mask: u64) -> Vec<String> {
    (1..=64)
        .filter(|&signo| contains(mask, signo))
        .map(name)
        .collect()
}

/// The name of signal number `signo`: `SIGINT`, or `SIGRTMIN+n` for a real-time signal
/// (numbered from the C library's SIGRTMIN, as `kill -l` does), or `signal N`.
pub fn name(signo: i32) -> String {
    let rtmin = libc::SIGRTMIN();
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(signal) => signal.as_str().to_owned(),
        Err(_) if signo == rtmin => "SIGRTMIN".to_owned(),
        Err(_) if signo > rtmin && signo <= libc::SIGRTMAX() => {
            format!("SIGRTMIN+{}", signo - rtmin)
        }
        Err(_) => format!("signal {signo}"),
    }
}

/// Whether signal `signo` is pending for process `pid`, sent to the process (`ShdPnd`)
/// or to its main thread (`SigPnd`); false if `pid` is gone.
///
/// # References: proc_pid_status(5)
pub fn pending(pid: i32, signo: i32) -> bool {
    signal_sets(pid).is_ok_and(|sets| contains(sets.process_pending | sets.thread_pending, signo))
}

/// Whether `pid` sleeps in a kernel function whose name contains `place` (`pipe_read`,
/// `do_sys_pause`, `futex`…), from `/proc/<pid>/wchan`.
///
/// # References: proc_pid_wchan(5)
pub fn asleep_in(pid: i32, place: &str) -> bool {
    crate::inspect::wchan(pid).is_some_and(|name| name.contains(place))
}

/// Polls `condition` every millisecond until it holds, for at most 5 s; the error says
/// `what` was awaited in vain.
pub fn wait_until(condition: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    for _ in 0..5000 {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    anyhow::bail!("waited 5 s for this in vain: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_name_their_signals() {
        let usr1_and_rtmin = (1 << 9) | (1 << (libc::SIGRTMIN() - 1));
        assert_eq!(names(usr1_and_rtmin), ["SIGUSR1", "SIGRTMIN"]);
        assert!(contains(usr1_and_rtmin, libc::SIGUSR1));
        assert!(!contains(usr1_and_rtmin, libc::SIGUSR2));
        assert_eq!(name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }
}
