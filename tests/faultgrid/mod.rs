//! The fault grid's engine (see tests/faults.rs, and the mqtt_workers package's
//! tests/faults.rs, which runs it on its own program): trials, the faults, what is left.

/// A program of the grid: its name, the arguments of a run of about a second (the moment
/// of the fault is drawn from it), and how long that run lasts.
pub type Program = (&'static str, &'static [&'static str], f64);

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a program may take to end after the fault, and then its group to vanish.
const HANG: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(3);
/// Runs at the same time: the machine has two cores.
const PARALLEL: usize = 3; // most trials wait on the kernel, not the CPU

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    CtrlC,
    Term,
    KillLeader,
    KillChild,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::CtrlC,
        Fault::Term,
        Fault::KillLeader,
        Fault::KillChild,
    ];
}

/// What one trial left behind; all zero when the program kept its promise.
#[derive(Default, Debug, Clone)]
struct Left {
    hangs: u32,
    processes: u32,
    zombies: u32,
    ipc_objects: u32,
    tmp_entries: u32,
    panics: u32,
    details: Vec<String>,
}

impl Left {
    fn clean(&self) -> bool {
        self.details.is_empty()
    }

    fn add(&mut self, other: &Left) {
        self.hangs += other.hangs;
        self.processes += other.processes;
        self.zombies += other.zombies;
        self.ipc_objects += other.ipc_objects;
        self.tmp_entries += other.tmp_entries;
        self.panics += other.panics;
        self.details.extend(other.details.iter().cloned());
    }
}

/// A small, seedable generator: the grid must be the same run for the same seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Trial {
    program: &'static str,
    fault: Fault,
    args: Vec<String>,
    delay: Duration,
    child_pick: u64,
    dir: PathBuf,
    bin: PathBuf,
}

struct Active {
    trial: Trial,
    leader: i32,
    /// Every process of the trial seen so far: the leader's descendants, and members.
    seen: BTreeSet<i32>,
    started: Instant,
    faulted: Option<Instant>,
    ended: Option<(Instant, ExitStatus)>,
    hung: bool,
}

/// Runs the grid over `programs` (name, arguments of a run of about a second, how long that
/// run lasts), whose binaries are in `bin_dir`; exits 1 if anything was left.
pub fn run(programs: &[Program], bin_dir: &Path) {
    let trials_each: usize = env_number("PROCLAB_FAULT_TRIALS", 1);
    let seed: u64 = env_number("PROCLAB_FAULT_SEED", 20261201);
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag and touches no memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    assert_eq!(result, 0, "prctl(PR_SET_CHILD_SUBREAPER)");

    let scratch = std::env::temp_dir().join(format!("proclab-faults.{}", std::process::id()));
    let before = proclab_entries(); // for the backstop
    let mut seen_in: HashMap<i32, String> = HashMap::new(); // pid -> the trial it was seen in
    let mut random = XorShift(seed.max(1));
    let mut queue = Vec::new();
    for round in 0..trials_each {
        for &(program, args, seconds) in programs.iter().filter(|(name, ..)| chosen(name)) {
            for fault in Fault::ALL {
                queue.push(Trial {
                    program,
                    fault,
                    args: args.iter().map(|arg| arg.to_string()).collect(),
                    delay: Duration::from_secs_f64(seconds * random.fraction()),
                    child_pick: random.next(),
                    dir: scratch.join(format!("{program}.{fault:?}.{round}")),
                    bin: bin_dir.join(program),
                });
            }
        }
    }
    let total = queue.len();
    queue.reverse();
    println!("fault grid: {total} trials, seed {seed}, {PARALLEL} at a time");

    let mut active: Vec<Active> = Vec::new();
    let mut statuses: HashMap<i32, ExitStatus> = HashMap::new();
    let mut results: BTreeMap<(&str, Fault), (u32, Left)> = BTreeMap::new();
    while !queue.is_empty() || !active.is_empty() {
        while active.len() < PARALLEL
            && let Some(trial) = queue.pop()
        {
            active.push(start(trial));
        }
        reap_all(&mut statuses);
        let mut index = 0;
        while index < active.len() {
            if let Some(left) = step(&mut active[index], &mut statuses) {
                let done = active.swap_remove(index);
                let what = format!(
                    "{} {:?} at {:?}",
                    done.trial.program, done.trial.fault, done.trial.delay
                );
                seen_in.extend(done.seen.iter().map(|&pid| (pid, what.clone())));
                let entry = results
                    .entry((done.trial.program, done.trial.fault))
                    .or_default();
                entry.0 += 1;
                entry.1.add(&left);
                let _ = std::fs::remove_dir_all(&done.trial.dir);
            } else {
                index += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let mut failed = 0;
    println!(
        "{:<20} {:<10} {:>6} {:>5} {:>5} {:>7} {:>4} {:>4} {:>6}",
        "program", "fault", "trials", "hangs", "procs", "zombies", "ipc", "tmp", "panics"
    );
    for ((program, fault), (trials, left)) in &results {
        println!(
            "{program:<20} {:<10} {trials:>6} {:>5} {:>5} {:>7} {:>4} {:>4} {:>6}",
            format!("{fault:?}"),
            left.hangs,
            left.processes,
            left.zombies,
            left.ipc_objects,
            left.tmp_entries,
            left.panics
        );
        if !left.clean() {
            failed += 1;
        }
    }
    for (_, left) in results.values() {
        for detail in left.details.iter().take(3) {
            println!("  {detail}");
        }
    }
    let passed = results.len() - failed;
    println!("\nfault grid: {passed} passed, {failed} failed");
    let missed = backstop(&before, &seen_in);
    for line in &missed {
        println!("  backstop: {line}");
    }
    println!(
        "backstop: {} IPC objects or directories left that the trials did not see",
        missed.len()
    );
    if failed > 0 || !missed.is_empty() {
        std::process::exit(1);
    }
}

/// `PROCLAB_FAULT_PROGRAMS=shared_mutex,fifo`: only these programs (all by default).
fn chosen(program: &str) -> bool {
    std::env::var("PROCLAB_FAULT_PROGRAMS")
        .map(|list| list.split(',').any(|name| name.trim() == program))
        .unwrap_or(true)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn start(trial: Trial) -> Active {
    let tmp = trial.dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("the trial's TMPDIR");
    let stderr = std::fs::File::create(trial.dir.join("stderr")).expect("stderr file");
    #[allow(clippy::zombie_processes)] // reaped by reap_all's waitpid(-1), with the orphans
    let child = Command::new(&trial.bin)
        .args(&trial.args)
        .env("TMPDIR", &tmp)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", trial.program));
    Active {
        leader: child.id() as i32,
        seen: BTreeSet::from([child.id() as i32]),
        trial,
        started: Instant::now(),
        faulted: None,
        ended: None,
        hung: false,
    }
}

/// Reaps every child that has ended: the programs, and the orphans adopted from them.
fn reap_all(statuses: &mut HashMap<i32, ExitStatus>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        statuses.insert(pid, ExitStatus::from_raw(status));
    }
}

/// Advances one trial; returns what it left once it is over.
fn step(run: &mut Active, statuses: &mut HashMap<i32, ExitStatus>) -> Option<Left> {
    let now = Instant::now();
    if run.ended.is_none() {
        let mut descendants = vec![run.leader];
        while let Some(pid) = descendants.pop() {
            let children = children_of(pid);
            run.seen.extend(&children);
            descendants.extend(children);
        }
        if let Some(status) = statuses.remove(&run.leader) {
            run.ended = Some((now, status));
        }
    }
    if run.faulted.is_none() && (now >= run.started + run.trial.delay || run.ended.is_some()) {
        if run.ended.is_none() {
            send_fault(run);
        }
        run.faulted = Some(now);
    }
    let faulted = run.faulted?;
    match run.ended {
        None if now > faulted + HANG => {
            run.hung = true; // counted by inspect, once the group is gone
            kill_members(run);
            None
        }
        None => None,
        Some((ended, _)) => {
            let group_alive = members(run.leader, &run.trial.dir.join("tmp"));
            run.seen.extend(group_alive.iter().map(|&(pid, _)| pid));
            if !group_alive.is_empty() && now < ended + GRACE {
                return None; // children still dying (parent-death signal, cleanup)
            }
            Some(inspect(run, &group_alive))
        }
    }
}

fn send_fault(run: &Active) {
    let leader = run.leader;
    let (target, signal) = match run.trial.fault {
        Fault::CtrlC => (-leader, libc::SIGINT),
        Fault::Term => (leader, libc::SIGTERM),
        Fault::KillLeader => (leader, libc::SIGKILL),
        Fault::KillChild => {
            let children = children_of(leader);
            if children.is_empty() {
                return; // no child at that moment: the run goes on undisturbed
            }
            let pick = children[(run.trial.child_pick % children.len() as u64) as usize];
            (pick, libc::SIGKILL)
        }
    };
    // SAFETY: kill(2) takes two numbers.
    unsafe { libc::kill(target, signal) };
}

/// SIGKILL to the trial's group and to every process of the trial outside it.
fn kill_members(run: &Active) {
    // SAFETY: kill(2) takes two numbers; the group and the pids are the trial's own.
    unsafe { libc::kill(-run.leader, libc::SIGKILL) };
    for (pid, _) in members(run.leader, &run.trial.dir.join("tmp")) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// The trial's processes, with their states: those of process group `group`, and those
/// elsewhere whose environment holds `TMPDIR=<tmp>` (inherited from the trial's program).
fn members(group: i32, tmp: &Path) -> Vec<(i32, char)> {
    let marker = format!("TMPDIR={}\0", tmp.display()).into_bytes();
    let carries_marker = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|environ| environ.windows(marker.len()).any(|part| part == marker))
    };
    let mut members = Vec::new();
    for pid in crate::util::pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let in_group = fields.get(2).and_then(|pgrp| pgrp.parse::<i32>().ok()) == Some(group);
        if in_group || carries_marker(pid) {
            members.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    members
}

/// Names in `dir` that mention one of `pids` as `.<pid>.` (the project's IPC names).
fn ipc_names_of(dir: &str, pids: &[i32]) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| {
                    name.contains("proclab")
                        && pids.iter().any(|pid| name.contains(&format!(".{pid}.")))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn inspect(run: &Active, group_alive: &[(i32, char)]) -> Left {
    let trial = &run.trial;
    let what = format!("{} {:?} at {:?}", trial.program, trial.fault, trial.delay);
    let mut left = Left::default();
    if run.hung {
        left.hangs = 1;
        left.details
            .push(format!("{what}: still running {HANG:?} after the signal"));
    }
    for &(pid, state) in group_alive {
        if state == 'Z' {
            left.zombies += 1;
        } else {
            left.processes += 1;
        }
        left.details
            .push(format!("{what}: left pid {pid} in state {state}"));
    }
    if !group_alive.is_empty() {
        kill_members(run);
    }
    let mut pids: Vec<i32> = run.seen.iter().copied().collect(); // the leader among them
    pids.extend(group_alive.iter().map(|&(pid, _)| pid));
    for dir in ["/dev/shm", "/dev/mqueue"] {
        for name in ipc_names_of(dir, &pids) {
            left.ipc_objects += 1;
            left.details.push(format!("{what}: left {dir}/{name}"));
            let _ = std::fs::remove_file(Path::new(dir).join(&name));
        }
    }
    let tmp = trial.dir.join("tmp");
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        left.tmp_entries += 1;
        left.details
            .push(format!("{what}: left {}", entry.path().display()));
    }
    let stderr = std::fs::read_to_string(trial.dir.join("stderr")).unwrap_or_default();
    if let Some(line) = stderr.lines().find(|line| line.contains("panicked")) {
        left.panics += 1;
        left.details.push(format!("{what}: {line}"));
    }
    left
}

/// The directories the backstop looks in: POSIX shared memory, POSIX queues, and the
/// temporary directory the programs would use without the trials' own TMPDIR.
fn backstop_dirs() -> Vec<PathBuf> {
    let dirs = ["/dev/shm", "/dev/mqueue"].map(PathBuf::from);
    dirs.into_iter().chain([std::env::temp_dir()]).collect()
}

/// Every entry named `proclab.…` in the backstop's directories now, as (directory, name).
fn proclab_entries() -> BTreeSet<(PathBuf, String)> {
    let mut entries = BTreeSet::new();
    for dir in backstop_dirs() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(name) = entry.file_name().into_string()
                && name.starts_with("proclab.")
            {
                entries.insert((dir.clone(), name));
            }
        }
    }
    entries
}

/// The pid in a project name, `proclab.<uid>.<pid>.<digits>` (None for mkdtemp's
/// `proclab.<uid>.XXXXXX`).
fn creator(name: &str) -> Option<i32> {
    let mut parts = name.split('.');
    let pid = parts.nth(2)?.parse().ok()?;
    parts.next()?; // the random digits after it
    Some(pid)
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// The backstop: the entries new since `before` that are still there GRACE after they were
/// first found, whose creator has ended — left behind, whichever process made them. (Other
/// runs of the project on this machine may make entries meanwhile: one whose creator still
/// runs is not left yet; a /tmp name without a pid is left to the trials' own TMPDIR
/// check.) Each one is described (with the trial whose process its pid was, if one was
/// seen) and removed.
fn backstop(before: &BTreeSet<(PathBuf, String)>, seen_in: &HashMap<i32, String>) -> Vec<String> {
    let tmp = std::env::temp_dir();
    let new = || {
        let now = proclab_entries();
        let left = now
            .difference(before)
            .filter(|(dir, name)| match creator(name) {
                Some(pid) => !alive(pid),
                None => *dir != tmp,
            });
        left.cloned().collect::<BTreeSet<_>>()
    };
    let first = new();
    if first.is_empty() {
        return Vec::new();
    }
    std::thread::sleep(GRACE); // a guard process may be removing it
    let still: Vec<_> = new().intersection(&first).cloned().collect();
    still
        .into_iter()
        .map(|(dir, name)| {
            let path = dir.join(&name);
            let by = creator(&name).map(|pid| match seen_in.get(&pid) {
                Some(what) => format!(", named after pid {pid} of {what}"),
                None => format!(", named after pid {pid}, seen in no trial"),
            });
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            format!("left {}{}", path.display(), by.unwrap_or_default())
        })
        .collect()
}
