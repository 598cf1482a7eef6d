//! worker_pool/worker.rs — a worker: read a task id, do the task, send back a result
//! tagged with it.
//!
//! Demonstrates: a worker reads 8-byte task ids from its own pipe until a stop message,
//! and writes each result as one record, far below PIPE_BUF, into the one pipe every
//! worker shares: a write that small is never torn by another worker's.
//! Run:     cargo run --bin worker_pool -- --workers 2 --tasks 100000 --task-cost uniform
//! Observe: `ls -l /proc/<worker>/fd`: its task pipe and the result pipe, shared by all.
//! Book:    book/src/patterns/worker_pool.md

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proclab::fdio::{read_exact, write_all, write_message};
use proclab::record::{Tag, encode};
use proclab::shm::{SharedArray, store};
use proclab::signals;

use crate::options::Args;

/// The task id of the stop message.
pub const STOP: u64 = u64::MAX;
/// The task id of a heartbeat record.
pub const HEARTBEAT: u64 = u64::MAX - 1;
/// A result record's size: the smallest record; far below PIPE_BUF, so writes stay whole.
pub const RECORD: usize = proclab::record::MIN_SIZE;
/// How often a busy worker says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// Numbers per task in --map-reduce.
const SLICE: usize = 100; // at most 100000 tasks × 100 × 8 bytes = 80 MB

// ANCHOR: work
/// A worker: read a task id, do it, send a result tagged with it; until a stop message.
pub fn work(
    args: &Args,
    serial: u32,
    tasks: &OwnedFd,
    results: &OwnedFd,
    map_reduce: &MapReduce,
) -> anyhow::Result<i32> {
    if args.crash_at_start {
        return Ok(3);
    }
    // Only the master decides when the pool stops: Ctrl-C to the whole group must not
    // kill a worker in the middle of its task. (Killing the master kills the workers:
    // child::run_then_exit set their parent-death signal.)
    signals::set_blocked(Signal::SIGINT, true)?;
    signals::set_blocked(Signal::SIGTERM, true)?;
    let heartbeat = encode(
        Tag {
            writer: serial,
            seq: HEARTBEAT,
        },
        RECORD,
    );
    let mut last_beat = Instant::now();
    let mut id = [0u8; 8];
    while read_exact(tasks, &mut id)? {
        let task = u64::from_le_bytes(id);
        if task == STOP {
            break;
        }
        let cost = args.cost(task);
        let started = Instant::now();
        while started.elapsed() < cost {
            std::thread::sleep(HEARTBEAT_EVERY.min(cost.saturating_sub(started.elapsed())));
            if args.hang_task != Some(task) && last_beat.elapsed() >= HEARTBEAT_EVERY {
                write_all(results, &heartbeat)?; // hung: silent, as a stuck loop would be
                last_beat = Instant::now();
            }
        }
        if args.map_reduce {
            let slice = &map_reduce.numbers.as_slice()[task as usize * SLICE..][..SLICE];
            store(
                &map_reduce.partial_sums.atomics()[task as usize],
                slice.iter().sum(),
            );
        }
        let result = encode(
            Tag {
                writer: serial,
                seq: task,
            },
            RECORD,
        );
        write_all(results, &result)?; // one write, < PIPE_BUF: whole
    }
    Ok(0)
}
// ANCHOR_END: work

/// Sends one task id (or STOP) to a worker: 8 bytes in one write, which the pipe keeps
/// whole. The pipe holds at most one unread id, so it never blocks; and it is sent even
/// while stopping, since stop messages are what a stopping master must still send.
pub fn send_id(task_pipe: &OwnedFd, id: u64) -> nix::Result<()> {
    write_message(task_pipe, &id.to_le_bytes())
}

/// The shared memory of --map-reduce, mapped before the first fork: the numbers, and one
/// partial sum per task.
pub struct MapReduce {
    pub numbers: SharedArray<u64>,
    pub partial_sums: SharedArray<AtomicU64>,
}

impl MapReduce {
    /// For `tasks` tasks; the numbers only with --map-reduce (else an empty array).
    pub fn new(map_reduce: bool, tasks: u64) -> nix::Result<MapReduce> {
        let mut numbers = SharedArray::<u64>::zeroed(if map_reduce {
            tasks as usize * SLICE
        } else {
            0
        })?;
        for (index, value) in numbers.view().iter_mut().enumerate() {
            *value = (index as u64 * 2_654_435_761) % 1000; // any numbers will do
        }
        let partial_sums = SharedArray::<AtomicU64>::zeroed(tasks as usize)?;
        Ok(MapReduce {
            numbers,
            partial_sums,
        })
    }
}
