//! measure — timing done properly: pinned CPUs, repeated samples, medians.
//!
//! A single timing on a shared, 2-core VM says little: the scheduler may move a process
//! between CPUs mid-run, and one slow sample is noise. So the measuring demos pin each
//! process to a chosen CPU, repeat, and report the median with the spread. copy_vs_share's
//! rounds ([`time_one_way`]) and its summary are timed and worded here too.

use std::time::Instant;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde_json::json;

use crate::narrate::event;

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

/// The `len` bytes of `storage` (at least `len` + 4096 long) that start on a page
/// boundary, as dd's buffers do: alignment, which can change the speed of the kernel's
/// copy, is then no difference from dd.
pub fn page_aligned(storage: &mut [u8], len: usize) -> &mut [u8] {
    let offset = storage.as_ptr().align_offset(4096);
    &mut storage[offset..offset + len]
}

/// Two figures whose ratio is in this band are "as fast": a difference of a few per cent
/// is within what one run differs from the next on a shared machine.
pub const AS_FAST: std::ops::RangeInclusive<f64> = 0.95..=1.05;

/// Which of two rates was higher, and by how much, in words: `compared("the queue", 1.0,
/// 4.0)` is "the queue was 4.0× slower"; within [`AS_FAST`] it is "as fast".
pub fn compared(what: &str, rate: f64, other: f64) -> String {
    match rate / other {
        ratio if AS_FAST.contains(&ratio) => format!("{what} was as fast, within 5%"),
        ratio if ratio < 1.0 => format!("{what} was {:.1}× slower", 1.0 / ratio),
        ratio => format!("{what} was {ratio:.1}× faster"),
    }
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

/// One round of one way: seconds, the child's sum, the child's minor faults.
pub type Round = (f64, f64, u64);

/// copy_vs_share: moves the array one way (`move_it` returns the child's sum and minor
/// faults), times it and narrates the round as the event `way`.
pub fn time_one_way(
    round: usize,
    way: &'static str,
    move_it: impl FnOnce() -> anyhow::Result<(f64, u64)>,
) -> anyhow::Result<Round> {
    let start = Instant::now();
    let (sum, faults) = move_it()?;
    let seconds = start.elapsed().as_secs_f64();
    let fields = json!({ "round": round, "seconds": seconds, "minor_faults": faults, "sum": sum });
    event(way).fields(fields).say(format!(
        "round {round} {way:<6}: the child summed {sum} in {:.1} ms, {faults} minor faults",
        seconds * 1e3
    ));
    Ok((seconds, sum, faults))
}

/// Narrates copy_vs_share's `summary`: the medians of the `pipe` and `shared` rounds, the
/// faster way and by how much, the minor faults (of the first rounds and of the parent's
/// fill), and whether every child's sum equals the parent's `expected`, bit for bit.
pub fn say_copy_vs_share(
    elements: usize,
    fill_faults: u64,
    expected: f64,
    pipe: &[Round],
    share: &[Round],
) {
    let rounds = pipe.len();
    let seconds = |of: &[Round]| Vec::from_iter(of.iter().map(|r| r.0));
    let (pipe_rounds, shared_rounds) = (seconds(pipe), seconds(share));
    let (pipe_seconds, shared_seconds) = (median(&pipe_rounds), median(&shared_rounds));
    let speedup = pipe_seconds / shared_seconds; // above 1: sharing was faster
    let ((_, pipe_sum, pipe_faults), (_, shared_sum, shared_faults)) = (pipe[0], share[0]);
    let same = |sum: f64| sum.to_bits() == expected.to_bits(); // the same additions, in order
    let sums_equal = pipe.iter().chain(share).all(|round| same(round.1));
    let (faster, verdict) = copy_vs_share_verdict(&pipe_rounds, &shared_rounds);
    event("summary")
        .fields(json!({
            "elements": elements, "bytes_copied": elements * 8, "rounds": rounds,
            "pipe_seconds": pipe_seconds, "shared_seconds": shared_seconds, "speedup": speedup,
            "faster": faster, "sums_equal": sums_equal,
            "pipe_minor_faults": pipe_faults, "shared_minor_faults": shared_faults,
            "fill_minor_faults": fill_faults, "expected_sum": expected, "pipe_sum": pipe_sum,
            "shared_sum": shared_sum,
        }))
        .say(format!(
            "summary: medians of {rounds} rounds: pipe {} ms, shared {} ms: {verdict}; \
         sums equal: {sums_equal}",
            milliseconds(pipe_seconds),
            milliseconds(shared_seconds)
        ));
}

/// copy_vs_share's verdict from the seconds of each way's rounds: the faster way
/// (`"pipe"`, `"shared"`, or `"neither"`) and the words. The two are "as fast" when their
/// medians are within 5%, or when each median lies within the other way's rounds
/// (fastest to slowest): a difference the rounds' own spread covers is no verdict.
fn copy_vs_share_verdict(pipe: &[f64], shared: &[f64]) -> (&'static str, String) {
    let (pipe_median, shared_median) = (median(pipe), median(shared));
    let range = |of: &[f64]| (quantile(of, 0.0), quantile(of, 1.0));
    let within = |value: f64, (fastest, slowest): (f64, f64)| (fastest..=slowest).contains(&value);
    let speedup = pipe_median / shared_median; // above 1: sharing was faster
    if AS_FAST.contains(&speedup) {
        return (
            "neither",
            "both ways were as fast (medians within 5%)".to_owned(),
        );
    }
    if within(pipe_median, range(shared)) && within(shared_median, range(pipe)) {
        let ((pipe_fastest, pipe_slowest), (shared_fastest, shared_slowest)) =
            (range(pipe), range(shared));
        return (
            "neither",
            format!(
                "both ways were as fast (each median within the other's rounds: pipe {}–{} ms, \
             shared {}–{} ms)",
                milliseconds(pipe_fastest),
                milliseconds(pipe_slowest),
                milliseconds(shared_fastest),
                milliseconds(shared_slowest)
            ),
        );
    }
    match speedup > 1.0 {
        true => ("shared", format!("shared memory was {speedup:.1}x faster")),
        false => ("pipe", format!("the pipe was {:.1}x faster", 1.0 / speedup)),
    }
}

/// `seconds` in milliseconds for a summary: 3 decimals below 10 ms, else 1.
fn milliseconds(seconds: f64) -> String {
    let decimals = if seconds < 0.01 { 3 } else { 1 };
    format!("{:.decimals$}", seconds * 1e3)
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

    /// Issue 15: copy_vs_share said "shared memory was 1.0x faster" when the two medians
    /// were within a few per cent, or within the rounds' spread.
    #[test]
    fn two_ways_within_5_per_cent_or_within_their_spread_are_as_fast() {
        let ms = |values: [f64; 5]| values.map(|v| v / 1e3);
        let verdict = |pipe, shared| copy_vs_share_verdict(&ms(pipe), &ms(shared));
        let (faster, words) = verdict([1.0, 1.0, 1.04, 1.1, 1.2], [1.0; 5]);
        assert_eq!(
            (faster, words.as_str()),
            ("neither", "both ways were as fast (medians within 5%)")
        );
        let (faster, words) = verdict([0.1, 0.2, 0.3, 0.4, 0.5], [0.15, 0.2, 0.22, 0.5, 0.6]);
        assert_eq!(faster, "neither", "{words}");
        assert!(
            words.contains("pipe 0.100–0.500 ms, shared 0.150–0.600 ms"),
            "{words}"
        );
        let (faster, words) = verdict([5.0, 5.0, 5.1, 5.2, 6.0], [1.0, 1.0, 1.1, 1.2, 9.0]);
        assert_eq!(
            (faster, words.as_str()),
            ("shared", "shared memory was 4.6x faster")
        );
        let (faster, words) = verdict([1.0, 1.1, 1.1, 1.2, 1.3], [1.2, 1.3, 1.3, 1.4, 1.5]);
        assert_eq!(
            (faster, words.as_str()),
            ("pipe", "the pipe was 1.2x faster")
        );
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
