//! mq_prio — MUTANT drop-when-full: O_NONBLOCK, and EAGAIN ignored.
//!
//! The classic mistake: "never block" taken literally. With O_NONBLOCK a full queue
//! makes mq_send fail with EAGAIN; this producer shrugs and goes on, so every job
//! past the tenth is lost. It must lose `exactly-once` and `blocks`.

use std::error::Error;
use std::io::BufRead;

use nix::mqueue::{MQ_OFlag, mq_open, mq_send};
use nix::sys::stat::Mode;

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::var("PROCLAB_MQ")?;
    // No O_NONBLOCK: when the queue is full, mq_send sleeps in the kernel until the
    // reader makes room — nothing dropped, no CPU burnt.
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_WRONLY | MQ_OFlag::O_NONBLOCK,
        Mode::empty(),
        None,
    )?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut fields = line.split_whitespace();
        let (Some(id), Some(priority)) = (fields.next(), fields.next()) else {
            continue;
        };
        let _ = mq_send(&queue, id.as_bytes(), priority.parse()?); // the bug: EAGAIN drops the job
    }
    Ok(())
}
