//! mq_prio — MUTANT fifo-order: every job sent with priority 0.
//!
//! The classic mistake: a queue used as a pipe. Without priorities the kernel keeps
//! plain FIFO order, so urgent jobs wait behind old ones. Nothing is lost and the
//! producer blocks when it should; it must lose `priority-order` only.

use std::error::Error;
use std::io::BufRead;

use nix::mqueue::{MQ_OFlag, mq_open, mq_send};
use nix::sys::stat::Mode;

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::var("PROCLAB_MQ")?;
    // No O_NONBLOCK: when the queue is full, mq_send sleeps in the kernel until the
    // reader makes room — nothing dropped, no CPU burnt.
    let queue = mq_open(name.as_str(), MQ_OFlag::O_WRONLY, Mode::empty(), None)?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut fields = line.split_whitespace();
        let (Some(id), Some(priority)) = (fields.next(), fields.next()) else {
            continue;
        };
        let _wanted: u32 = priority.parse()?;
        mq_send(&queue, id.as_bytes(), 0)?; // the bug: the priority is dropped
    }
    Ok(())
}
