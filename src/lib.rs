//! proclab — the plumbing the demos share.
//!
//! Nothing a reader must see to understand a demo lives here: the lesson's system calls
//! stay in `demos/`. This library only removes noise — how a line of the timeline is
//! written, how a forked child is made to end in `_exit`, how `/proc` is read, how a
//! command line is parsed and an error reported.

pub mod child;
pub mod cli;
pub mod fdio;
pub mod fifo;
pub mod inspect;
pub mod jobstate;
pub mod lifecycle;
pub mod measure;
pub mod names;
pub mod narrate;
pub mod pipes;
pub mod pty;
pub mod queues;
pub mod record;
pub mod shm;
pub mod signals;
pub mod sigstate;
