//! measure — timing done properly: pinned CPUs, repeated samples, medians.
//!
//! A single timing on a shared, 2-core VM says little: the scheduler may move a process
//! between CPUs mid-run, and one slow sample is noise. So the measuring demos pin each
//! process to a chosen CPU, repeat, and report the median with the spread.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Pins the calling thread to `cpu`.
///
/// # References: sched_setaffinity(2)
pub fn pin_to_cpu(cpu: usize) -> nix::Result<()> {
    pin_task_to_cpu(Pid::from_raw(0), cpu)
}

/// Pins task `pid` (a process, or one thread by its tid) to `cpu`; when the call returns,
/// the kernel runs it only there.
///
/// # References: sched_setaffinity(2)
pub fn pin_task_to_cpu(pid: Pid, cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(pid, &set)
}

/// The CPUs this process may run on (its affinity mask), in order.
///
/// # References: sched_getaffinity(2)
pub fn usable_cpus() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return vec![0];
    };
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// The `q`-quantile (0.0 to 1.0) of `samples`, by nearest rank; NaN if empty.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of `samples`.
pub fn median(samples: &[f64]) -> f64 {
    quantile(samples, 0.5)
}

/// Times `once`, run `warm_up` times untimed and then `count` times timed, one round at a
/// time: returns each timed round's duration in microseconds. Checks for a stop signal
/// before each round; an error names the round it happened in.
pub fn time_rounds(
    warm_up: u32,
    count: u32,
    mut once: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(count as usize);
    for round in 0..warm_up + count {
        crate::signals::bail_if_stopped()?;
        let start = std::time::Instant::now();
        once().map_err(|error| error.context(format!("round {round}")))?;
        if round >= warm_up {
            samples.push(start.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    Ok(samples)
}

/// Waits until each of `tasks` (process or thread ids) sleeps — state `S` in
/// `/proc/<id>/stat` — so that what it will touch is touched before it is measured.
/// Fails if one ends first, or as soon as a stop signal comes.
///
/// # References: proc_pid_stat(5)
pub fn wait_until_asleep(tasks: &[i32]) -> anyhow::Result<()> {
    for &id in tasks {
        loop {
            crate::signals::bail_if_stopped()?;
            match crate::inspect::inspect(id)?.state {
                'S' => break,
                'Z' | 'X' => anyhow::bail!("{id} ended before it went to sleep"),
                _ => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
    }
    Ok(())
}

// ANCHOR: rss_pss
/// The memory of the processes `pids`, summed, in KiB, from the `Rss:` and `Pss:` lines
/// of `/proc/<pid>/smaps_rollup`: Rss counts every page a process has in memory, even one
/// that other processes map too; Pss divides each page by the number of its mappers.
///
/// # References: proc_pid_smaps_rollup(5)
pub fn rss_pss_kib(pids: &[i32]) -> anyhow::Result<(u64, u64)> {
    let (mut rss_kib, mut pss_kib) = (0, 0);
    for &pid in pids {
        let path = format!("/proc/{pid}/smaps_rollup");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| anyhow::anyhow!("read {path}: {error}"))?;
        let kib = |name: &str| -> Option<u64> {
            let line = text.lines().find_map(|line| line.strip_prefix(name))?;
            line.trim().strip_suffix("kB")?.trim().parse().ok()
        };
        let (Some(rss), Some(pss)) = (kib("Rss:"), kib("Pss:")) else {
            anyhow::bail!("{path} has no Rss and Pss lines");
        };
        (rss_kib, pss_kib) = (rss_kib + rss, pss_kib + pss);
    }
    Ok((rss_kib, pss_kib))
}
// ANCHOR_END: rss_pss

/// Minor page faults of this process so far (`ru_minflt`): each is a page the kernel had
/// to map for it on first touch, without reading a disk.
///
/// # References: getrusage(2)
pub fn minor_faults() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map_or(0, |usage| usage.minor_page_faults() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&samples), 3.0);
        assert_eq!(quantile(&samples, 0.99), 5.0);
        assert_eq!(quantile(&samples, 0.0), 1.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!usable_cpus().is_empty());
    }

    #[test]
    fn rounds_are_timed_after_the_warm_up() {
        let mut runs = 0;
        let samples = time_rounds(2, 3, || {
            runs += 1;
            Ok(())
        });
        assert_eq!(samples.expect("no error").len(), 3);
        assert_eq!(runs, 5);
        let failing = time_rounds(0, 1, || anyhow::bail!("no"));
        assert!(format!("{:#}", failing.expect_err("fails")).contains("round 0"));
    }

    #[test]
    fn this_process_has_memory_and_its_share_is_no_more() {
        let (rss, pss) = rss_pss_kib(&[std::process::id() as i32]).expect("smaps_rollup");
        assert!(rss > 0 && pss > 0 && pss <= rss, "{rss} {pss}");
        assert!(rss_pss_kib(&[1 << 23]).is_err()); // no such process
        assert!(wait_until_asleep(&[1 << 23]).is_err());
    }
}
