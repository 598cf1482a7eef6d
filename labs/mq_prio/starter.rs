//! mq_prio — your program: send every job to the grader's queue with its priority.
//!
//! The contract is in labs/mq_prio/README.md (and the book's Labs part). In short:
//! - each line on stdin is `<id> <priority>` (priority 0–9);
//! - send the id, as decimal text, to the POSIX queue named by PROCLAB_MQ (the grader
//!   created it), with that priority, in input order;
//! - when the queue is full, wait for room: drop nothing, and do not spin;
//! - at end-of-file, exit 0.
//!
//! Grade it: cargo run -p labs --bin grade -- mq_prio --submission labs/mq_prio/starter.rs

use std::error::Error;
use std::io::BufRead;

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::var("PROCLAB_MQ")?;
    // TODO: open the queue `name` for writing with nix::mqueue::mq_open. Think about
    //       O_NONBLOCK: what should happen when the queue is full?
    let _ = name;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(_priority)) = (fields.next(), fields.next()) else {
            continue;
        };
        // TODO: send the id with mq_send, and its priority as the last argument.
    }
    Ok(())
}
