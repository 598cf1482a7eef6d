//! plan — the pipeline lab's workload for a seed: what each stage adds, the input, and
//! the bytes that must come out (`--answers` prints their digests).

use crate::seed::{Rng, fnv1a};

pub struct Plan {
    pub adds: Vec<u8>,
    pub input: Vec<u8>,
}

pub fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let stages = rng.range(3, 4) as usize;
    let adds = (0..stages).map(|_| rng.range(1, 255) as u8).collect();
    let size = rng.range(64, 256) as usize * 1024;
    let input = (0..size).map(|_| rng.next_u64() as u8).collect();
    Plan { adds, input }
}

pub fn expected(plan: &Plan) -> Vec<u8> {
    let shift = plan
        .adds
        .iter()
        .fold(0u8, |sum, add| sum.wrapping_add(*add));
    plan.input
        .iter()
        .map(|byte| byte.wrapping_add(shift))
        .collect()
}

pub fn answers(seed: u64) -> String {
    let plan = plan(seed);
    let out = expected(&plan);
    format!(
        "pipeline, seed {seed}: {} stages adding {:?}; {} bytes in (fnv1a {:016x}), the same number out (fnv1a {:016x})\n",
        plan.adds.len(),
        plan.adds,
        plan.input.len(),
        fnv1a(&plan.input),
        fnv1a(&out)
    )
}
