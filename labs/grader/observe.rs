//! observe — what the kernel shows about a process, read from /proc.
//!
//! The grader never trusts what a program says about itself: it reads the state, parent,
//! CPU time, descriptors and wait channel the kernel keeps. A new kind of observation
//! for a new lab is a new function here.
//!
//! # References: proc_pid_stat(5), proc_pid_status(5), proc_pid_fd(5), proc_pid_fdinfo(5),
//! proc_pid_wchan(5)

use std::fs;

/// The fields of /proc/<pid>/stat the checks use (CPU time: [`cpu_ns`], finer).
#[derive(Clone, Debug)]
pub struct Stat {
    pub pid: i32,
    /// R, S, D, T, t, Z, X …
    pub state: char,
}

/// Reads /proc/<pid>/stat; `None` once the process is gone (reaped).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let after_name = &text[text.rfind(')')? + 2..];
    Some(Stat {
        pid,
        state: after_name.chars().next()?,
    })
}

/// Job control as the kernel keeps it (/proc/<pid>/stat fields 3, 5 and 8).
#[derive(Clone, Copy, Debug)]
pub struct Groups {
    pub state: char,
    pub pgrp: i32,
    /// The foreground process group of the process's controlling terminal (-1: none).
    pub tpgid: i32,
}

/// Reads the state, process group and terminal foreground group of `pid`.
pub fn groups(pid: i32) -> Option<Groups> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let number = |at: usize| fields.get(at)?.parse::<i32>().ok();
    Some(Groups {
        state: fields.first()?.chars().next()?,
        pgrp: number(2)?,
        tpgid: number(5)?,
    })
}

/// The pids of `parent`'s children, from /proc/<pid>/task/<tid>/children (cheap: no scan
/// of the whole of /proc, so the checks can sample every few milliseconds).
pub fn child_pids(parent: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    pids
}

/// `parent`'s children as the kernel shows them now.
pub fn children(parent: i32) -> Vec<Stat> {
    child_pids(parent).into_iter().filter_map(stat).collect()
}

/// `root`'s descendants (children, their children, …), not `root` itself.
pub fn descendants(root: i32) -> Vec<Stat> {
    let mut found: Vec<Stat> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for stat in children(parent) {
            frontier.push(stat.pid);
            found.push(stat);
        }
    }
    found
}

/// The command line, its arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = bytes
        .split(|&byte| byte == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    words.join(" ")
}

/// Where the process sleeps in the kernel (`do_wait`, `pipe_read`, `futex_wait_queue`…);
/// "0" or empty while it runs.
pub fn wchan(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Nanoseconds spent on a CPU (first field of /proc/<pid>/schedstat): finer than ticks.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// One open descriptor: its number, what it points to (`pipe:[1234]`, a path), and the
/// open flags from fdinfo (octal, as the kernel prints them).
#[derive(Clone, Debug)]
pub struct Fd {
    pub fd: i32,
    pub target: String,
    pub flags: u32,
}

impl Fd {
    /// Opened for writing (O_WRONLY or O_RDWR)?
    pub fn writes(&self) -> bool {
        self.flags & 0o3 != 0
    }
}

/// The descriptors of `pid` (/proc/<pid>/fd and fdinfo), sorted by number.
pub fn fds(pid: i32) -> Vec<Fd> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<Fd> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path())
                .ok()?
                .to_string_lossy()
                .into_owned();
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok())
                .unwrap_or(0);
            Some(Fd { fd, target, flags })
        })
        .collect();
    fds.sort_by_key(|fd| fd.fd);
    fds
}
