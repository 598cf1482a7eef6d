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
}
