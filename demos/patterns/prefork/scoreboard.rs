//! scoreboard — prefork's table in shared memory: one row per worker slot.
//!
//! Demonstrates: anonymous MAP_SHARED memory mapped before the first fork is one table
//! for the master and every worker: each worker writes its own row (pid once ready,
//! requests served, connections held, heartbeat), the master reads them all. The cells
//! are atomics: two processes may add to one at once (`active`), and no read is torn.
//! Run:     cargo run --bin prefork     (then: curl 127.0.0.1:<port>/status)
//! Observe: `grep rw-s /proc/<worker>/maps` shows /dev/zero (deleted); /dev/shm stays empty.
//! Book:    book/src/patterns/prefork.md
//!
//! Apache's prefork MPM keeps one like it (what `apachectl status` shows). The master
//! resets a row when it has reaped the row's worker, before the slot's next worker starts.

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::ArrayView2;
use proclab::narrate::{self, event};
use proclab::shm::SharedArray;
use serde::Serialize;

// ANCHOR: columns
/// The columns of a row.
const PID: usize = 0; // the slot's worker, written by the worker when it is ready (0: none)
const SERVED: usize = 1; // requests it has answered
const ACTIVE: usize = 2; // connections it holds: being served, or passed and queued
const HEARTBEAT: usize = 3; // when it last showed life: ms on the demo's clock
const COLUMNS: usize = 4;
// ANCHOR_END: columns

/// The shared table: `slots` rows of [`COLUMNS`] atomic counters.
pub struct Scoreboard {
    cells: SharedArray<AtomicU64>,
    slots: usize,
}

/// One row, read at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub slot: usize,
    pub pid: u64,
    pub served: u64,
    pub active: u64,
    /// Seconds since the worker last showed life.
    pub heartbeat_age: f64,
}

impl Scoreboard {
    /// Maps a zeroed scoreboard, shared with every process forked afterwards (anonymous
    /// shared memory: it has no name, nothing to remove from /dev/shm).
    pub fn new(slots: usize) -> nix::Result<Scoreboard> {
        let cells = SharedArray::zeroed(slots * COLUMNS)?;
        Ok(Scoreboard { cells, slots })
    }

    /// The cells as a slots × columns `ndarray` view.
    fn rows(&self) -> ArrayView2<'_, AtomicU64> {
        self.cells
            .atomics()
            .into_shape_with_order((self.slots, COLUMNS))
            .expect("the mapping holds slots × COLUMNS cells")
    }

    fn get(&self, slot: usize, column: usize) -> u64 {
        self.rows()[[slot, column]].load(Ordering::SeqCst)
    }

    fn set(&self, slot: usize, column: usize, value: u64) {
        self.rows()[[slot, column]].store(value, Ordering::SeqCst)
    }

    /// The pid that marked `slot` ready, 0 if none has yet.
    pub fn ready_pid(&self, slot: usize) -> u64 {
        self.get(slot, PID)
    }

    /// Requests answered by the slot's current worker.
    pub fn served(&self, slot: usize) -> u64 {
        self.get(slot, SERVED)
    }

    /// Connections the slot's worker holds.
    pub fn active(&self, slot: usize) -> u64 {
        self.get(slot, ACTIVE)
    }

    /// Worker: says it is ready to take connections (its pid), and alive.
    pub fn ready(&self, slot: usize, pid: u32) {
        self.beat(slot);
        self.set(slot, PID, pid.into());
    }

    /// Worker: says it is alive.
    pub fn beat(&self, slot: usize) {
        self.set(slot, HEARTBEAT, (narrate::elapsed() * 1000.0) as u64);
    }

    /// One more connection held by the slot's worker (`+1`), or one fewer (`-1`).
    pub fn add_active(&self, slot: usize, change: i64) {
        let cell = &self.rows()[[slot, ACTIVE]];
        if change >= 0 {
            cell.fetch_add(change as u64, Ordering::SeqCst);
        } else {
            // Never below zero: the master resets the row when a worker dies.
            let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |active| {
                Some(active.saturating_sub(change.unsigned_abs()))
            });
        }
    }

    /// Worker: one more request answered.
    pub fn count_served(&self, slot: usize) {
        self.rows()[[slot, SERVED]].fetch_add(1, Ordering::SeqCst);
    }

    /// Master: empties the row of a worker it has reaped, for the slot's next one.
    pub fn clear(&self, slot: usize) {
        for column in 0..COLUMNS {
            self.set(slot, column, 0);
        }
    }

    /// Master: prints every row on the timeline (event `scoreboard`).
    pub fn print(&self) {
        let rows = self.snapshot();
        event("scoreboard")
            .field("rows", &rows)
            .say(format!("scoreboard: {}", line(&rows)));
    }

    /// Every row, now.
    pub fn snapshot(&self) -> Vec<Row> {
        let now_ms = narrate::elapsed() * 1000.0;
        (0..self.slots)
            .map(|slot| Row {
                slot,
                pid: self.get(slot, PID),
                served: self.get(slot, SERVED),
                active: self.get(slot, ACTIVE),
                heartbeat_age: match self.get(slot, HEARTBEAT) {
                    0 => 0.0,
                    beat => ((now_ms - beat as f64).max(0.0) / 1000.0 * 100.0).round() / 100.0,
                },
            })
            .collect()
    }
}

/// The scoreboard on one line, for the timeline.
fn line(rows: &[Row]) -> String {
    rows.iter()
        .map(|row| {
            format!(
                "[{}] {} served {} active {}",
                row.slot,
                if row.pid == 0 {
                    "-".to_owned()
                } else {
                    row.pid.to_string()
                },
                row.served,
                row.active
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}
