//! respawn — how the prefork master reaps its workers and replaces them in their slots.
//!
//! Demonstrates: what prefork adds to the supervisor's reaping: a worker that was ready
//! (its pid on the scoreboard) is replaced at once in the same slot; one that died before
//! it was ready is replaced after a backoff, and the master gives up after five in a row.
//! Run:     cargo run --bin prefork -- --workers 2 --crash-at-start
//! Observe: `reaped` and `backoff` events 100, 200, 400, 800 ms apart, then "giving up".
//! Book:    book/src/patterns/prefork.md

use proclab::child::ending;
use proclab::narrate::event;
use proclab::signals;

use crate::Master;
use crate::supervisor::Reaped;

impl Master<'_> {
    // ANCHOR: reap
    /// Reaps every child that has ended (see the supervisor): the self-test's client, or
    /// a worker, whose slot gets its replacement.
    pub fn reap(&mut self) -> anyhow::Result<()> {
        if !self.supervisor.sigchld_came() {
            return Ok(());
        }
        while let Some(Reaped { pid, slot, status }) = self.supervisor.reap_one()? {
            if self.self_test.is_client(pid) {
                self.client_done(&status);
                continue;
            }
            let Some(slot) = slot else { continue };
            let worker = self.supervisor.slots[slot].take();
            let retired = worker.expect("reap_one found it in its slot").retiring;
            // (its channel is closed here: the replacement must not inherit it)
            let was_ready = self.board.ready_pid(slot) == pid.as_raw() as u64;
            self.history.slots[slot].served += self.board.served(slot);
            self.board.clear(slot); // the row is the next worker's
            let ended = ending(&status);
            event("reaped")
                .field("slot", slot)
                .field("worker", pid.as_raw())
                .fields(&ended)
                .say(format!(
                    "waitpid -> worker {pid} (slot {slot}) {}",
                    ended.status
                ));
            self.replace(slot, retired, was_ready, &ended.status)?;
        }
        Ok(())
    }
    // ANCHOR_END: reap

    // ANCHOR: replace
    /// A slot's worker has ended: replace it now — or, if it died before it was ready
    /// (and so will likely die again), after 100 ms, 200, 400… and give up after
    /// GIVE_UP_AFTER in a row. A stopping server replaces nobody.
    fn replace(
        &mut self,
        slot: usize,
        retired: bool,
        was_ready: bool,
        status: &str,
    ) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        if was_ready {
            self.supervisor.backoff.started(slot);
        }
        if retired {
            self.history.rolled += 1;
            return self.spawn(slot);
        }
        if was_ready {
            self.history.respawns += 1;
            return self.spawn(slot);
        }
        self.history.start_failures += 1;
        let backoff = &mut self.supervisor.backoff;
        let delay = backoff.failed(slot, "died before it was ready", status)?;
        self.supervisor.respawn_after(slot, delay);
        Ok(())
    }
    // ANCHOR_END: replace

    /// Forks the replacements whose backoff is over.
    pub fn respawn_due(&mut self) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        while let Some(slot) = self.supervisor.due() {
            self.history.respawns += 1;
            self.spawn(slot)?;
        }
        Ok(())
    }

    /// True once a stop has begun, or a stop signal has come that the loop has not
    /// handled yet: no worker is replaced any more.
    fn stopping(&self) -> bool {
        self.stop.is_some() || signals::stop_requested().is_some()
    }
}
