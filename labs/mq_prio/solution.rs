//! mq_prio — the answer key: send every job to the grader's queue with its priority.
//!
//! Contract: labs/mq_prio/README.md. Lines `<id> <priority>` on stdin; send the id as
//! text to the queue PROCLAB_MQ names, with that priority, in input order; a full queue
//! makes mq_send sleep until there is room; at end-of-file exit 0.
//! Grade: cargo run -p labs --bin grade -- mq_prio --submission labs/mq_prio/solution.rs

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
        mq_send(&queue, id.as_bytes(), priority.parse()?)?; // the kernel orders by priority
    }
    Ok(())
}
