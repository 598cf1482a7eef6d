//! The fault grid: every program interrupted at random moments — Ctrl-C to its group,
//! SIGTERM to it, SIGKILL of it, SIGKILL of one of its children — and then, from the
//! kernel's view, what is left: processes and zombies of its process group, POSIX shared
//! memory and queues named after its pids, anything in its private TMPDIR, a hang of more
//! than 10 s after the signal, a panic on stderr. A process counts as the trial's when
//! it is in the trial's process group or carries the trial's own TMPDIR in its
//! environment: a program that moves children to groups or sessions of their own
//! (process_groups, sessions, jobs) cannot hide what it leaves.
//!
//! Its own process (`harness = false`), so that it may be the *subreaper* of everything it
//! starts: orphans of a killed program come to it, and it can see them.
//!
//! A program's IPC objects are found by the pids in their names (`.<pid>.`): those of the
//! leader, of the members still alive, and of every process seen in the trial (its
//! descendants, looked at every few milliseconds while it runs). A backstop that no name
//! escapes follows the grid: every proclab-named entry of /dev/shm, /dev/mqueue and /tmp
//! that is new since the grid began and still there once its creator (the pid in its
//! name) has ended fails the grid, whichever trial made it.
//!
//! `cargo test --test faults` runs one trial per program and fault with a fixed seed;
//! `PROCLAB_FAULT_TRIALS=25 PROCLAB_FAULT_SEED=7 cargo test --release --test faults` a
//! long run; `PROCLAB_FAULT_PROGRAMS=fifo,mqueue` only those programs.

mod faultgrid;
mod util;

use std::path::Path;

/// The programs, the arguments of a run of about a second (the moment of the fault is
/// drawn from it), and how long that run lasts.
const PROGRAMS: &[faultgrid::Program] = &[
    ("fork_exec_wait", &["--exec", "sleep", "1"], 1.0),
    ("child_status", &["--exec", "sleep", "1"], 1.0),
    ("fork_buffer", &[], 0.01),
    ("zombie", &["--children", "3"], 1.0),
    ("orphan", &["--no-subreaper", "--hold", "1"], 1.0),
    ("sigchld", &["--simultaneous", "--naive"], 2.0),
    ("sigchld_signalfd", &[], 1.0),
    ("sigchld_pidfd", &[], 1.0),
    ("sigchld_ignore", &[], 1.0),
    ("signal_handler", &[], 0.3),
    ("signal_mask", &["--hold", "1"], 1.0),
    ("sigsuspend", &["--alarm", "1"], 1.0),
    ("handler_unsafe", &[], 1.0),
    ("fork_threads", &["--deadline", "1"], 1.0),
    ("process_groups", &["--hold", "1"], 1.0),
    ("sessions", &["--hold", "1"], 1.0),
    ("jobs", &["--hold", "0.15"], 0.9),
    ("pipe", &["--records", "500000"], 0.8),
    ("pipe_capacity", &[], 0.1),
    ("pipe_atomic", &[], 1.0),
    ("sigpipe", &[], 0.02),
    ("pipe_bandwidth", &["--runs", "1"], 0.5),
    ("fifo", &["--delay", "1", "--records", "1000000"], 1.0),
    ("duplex", &[], 0.5),
    ("pipe_deadlock", &[], 1.0),
    ("mqueue", &["--messages", "50000"], 0.9),
    ("mq_priorities", &["--hold", "1"], 1.0),
    ("mq_full", &[], 0.03),
    ("mq_vs_pipe", &["--messages", "8000"], 0.9),
    ("shared_mutex", &["--iterations", "8000000"], 1.0),
    ("robust_mutex", &["--iterations", "6000000"], 0.8),
    ("shared_array", &[], 1.0),
    ("copy_vs_share", &["--elements", "6000000"], 1.0),
    ("nice", &["--seconds", "1"], 1.0),
    ("ctx_switch", &["--rounds", "2000"], 1.0),
    ("proc_vs_thread", &["--count", "50"], 1.0),
    (
        "worker_pool",
        &["--tasks", "1000", "--task-cost", "uniform"],
        1.0,
    ),
    ("prefork", &["--seconds", "1"], 1.0),
];

fn main() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zombie"))
        .parent()
        .expect("the binaries' directory");
    faultgrid::run(PROGRAMS, bin_dir);
}
