//! plan — the reaper lab's workload for a seed: each child's fate (an exit code or a
//! signal) and its life, and what the grader expects for it (`--answers`).

use std::collections::BTreeMap;

use nix::sys::signal::Signal;

use super::BURST;
use crate::seed::Rng;

#[derive(Clone, Copy)]
pub(super) enum Fate {
    Exit(i32),
    Killed(Signal),
}

impl Fate {
    pub(super) fn report(self) -> String {
        match self {
            Fate::Exit(code) => format!("exit {code}"),
            Fate::Killed(signal) => format!("signal {}", signal as i32),
        }
    }
}

/// Child 0 holds on until the trickle has started; 1..=6 end one by one; 100.. are the burst.
pub(super) struct Plan {
    pub(super) children: BTreeMap<u32, (Fate, u64)>, // id -> fate, and its life in ms (trickle)
}

pub fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let signals = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGKILL,
    ];
    let mut children = BTreeMap::new();
    children.insert(0, (Fate::Killed(*rng.pick(&signals[..5])), 0));
    for id in 1..=6u32 {
        let fate = if rng.range(0, 2) == 0 {
            Fate::Killed(*rng.pick(&signals))
        } else {
            Fate::Exit(rng.range(0, 120) as i32)
        };
        children.insert(id, (fate, 80 + 45 * u64::from(id) + rng.range(0, 15)));
    }
    for id in 100..100 + BURST as u32 {
        children.insert(id, (Fate::Exit(rng.range(1, 120) as i32), 0));
    }
    Plan { children }
}

pub fn answers(seed: u64) -> String {
    let mut out = format!("reaper, seed {seed}: the lines on fd 3, by child id\n");
    for (id, (fate, life)) in plan(seed).children {
        let role = match id {
            0 => "holds until the trickle has started, then killed".to_string(),
            100.. => "burst: exits with the others at once".to_string(),
            _ => format!("lives {life} ms"),
        };
        out += &format!("child {id:3}: <pid> {:10}  ({role})\n", fate.report());
    }
    out
}
