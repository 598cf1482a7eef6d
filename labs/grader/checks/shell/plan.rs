//! plan — the shell lab's trace for a seed, in a small language like CS:APP's sdriver:
//! lines typed, keys pressed, signals the grader sends a job, pauses, end-of-file. The
//! seed chooses how many background jobs come first (so the job numbers `%N` move), the
//! signal that ends the first job, which background job `fg` brings back, and the life
//! of the last job.

use std::fmt::Write;

use nix::sys::signal::Signal;

use crate::seed::Rng;

/// One step. A job is the helper `lab-child` with `--id <id>`, so the grader finds it.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Type `lab-child hold --id ID`: a foreground job that runs until a signal.
    Fg(u32),
    /// Type a background job: `lab-child hold --id ID &` and the like.
    Bg(u32, Kind),
    /// The grader itself sends the foreground job a signal: it ends on its own.
    End(u32, Signal),
    /// Ctrl-C (0x03) on the terminal; the foreground job is `ID`.
    Int(u32),
    /// Ctrl-Z (0x1a) on the terminal; the foreground job is `ID`.
    Tstp(u32),
    /// Type `jobs`.
    Jobs,
    /// Type `bg %N` for job number N, which is the helper `ID`.
    BgCmd(u32, u32),
    /// Type `fg %N` for job number N, which is the helper `ID`.
    FgCmd(u32, u32),
    /// Let time pass (ms), watching.
    Pause(u64),
    /// Ctrl-D (0x04) at the start of a line: end-of-file.
    Eof,
}

/// What a background job does.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `hold`: runs until a signal.
    Hold,
    /// `exit CODE --after MS`: ends by itself.
    Exit(i32, u64),
    /// `read`: reads the terminal, so the kernel stops it with SIGTTIN.
    Read,
}

pub fn plan(seed: u64) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let ends = [
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGHUP,
        Signal::SIGKILL,
    ];
    let extras = rng.range(0, 2) as u32;
    let mut steps = vec![Step::Fg(1), Step::End(1, *rng.pick(&ends))];
    // Background jobs: numbers 1..=extras, then 10 is job extras+1.
    steps.extend((0..extras).map(|extra| Step::Bg(2 + extra, Kind::Hold)));
    steps.extend([Step::Bg(10, Kind::Hold), Step::Fg(11), Step::Int(11)]);
    // 11 is gone: 12 gets the number 11 had (the smallest free, and the largest + 1).
    let stopped = extras + 2;
    steps.extend([
        Step::Fg(12),
        Step::Tstp(12),
        Step::Jobs,
        Step::BgCmd(stopped, 12),
    ]);
    let mut running: Vec<(u32, u32)> = (0..extras).map(|extra| (extra + 1, 2 + extra)).collect();
    running.extend([(extras + 1, 10), (stopped, 12)]);
    let (number, id) = *rng.pick(&running);
    steps.extend([Step::FgCmd(number, id), Step::Int(id)]);
    let code = rng.range(0, 120) as i32;
    let life = rng.range(200, 320); // long enough to be seen alive on a loaded machine
    steps.extend([
        Step::Fg(13),
        Step::Tstp(13),
        Step::Bg(14, Kind::Exit(code, life)),
        Step::Bg(15, Kind::Read),
        Step::Pause(life + 500),
        Step::Eof,
    ]);
    steps
}

/// The trace as a TA reads it (`grade shell --seed N --answers`).
pub fn answers(seed: u64) -> String {
    let job = |id: u32| format!("lab-child hold --id {id}");
    let mut out = format!(
        "shell, seed {seed}: the trace (the prompt is `{}`; WAIT = the next prompt; lab-child is the grader's helper, typed with its whole path)\n",
        super::term::PROMPT
    );
    out += "WAIT                                  the first prompt; the shell's group owns the terminal\n";
    for step in plan(seed) {
        let (what, expect) = match step {
            Step::Fg(id) => (
                format!("TYPE {}", job(id)),
                "runs in its own group, which owns the terminal (tpgid)".to_string(),
            ),
            Step::Bg(id, Kind::Hold) => (
                format!("TYPE {} &", job(id)),
                "WAIT; runs in its own group; the terminal stays the shell's".to_string(),
            ),
            Step::Bg(id, Kind::Read) => (
                format!("TYPE lab-child read --id {id} &"),
                "WAIT; reads the terminal: stopped (T) by SIGTTIN".to_string(),
            ),
            Step::Bg(id, Kind::Exit(code, life)) => (
                format!("TYPE lab-child exit {code} --after {life} --id {id} &"),
                "WAIT; ends by itself; reaped within 200 ms".to_string(),
            ),
            Step::End(id, signal) => (
                format!("SIGNAL {signal:?} to {id}"),
                "the job ends; WAIT; the terminal is the shell's again".to_string(),
            ),
            Step::Int(id) => (
                "INT (Ctrl-C)".to_string(),
                format!("job {id} dies, the shell and background jobs live; WAIT"),
            ),
            Step::Tstp(id) => (
                "TSTP (Ctrl-Z)".to_string(),
                format!("job {id} in state T, the others not; WAIT"),
            ),
            Step::Jobs => ("TYPE jobs".to_string(), "WAIT".to_string()),
            Step::BgCmd(number, id) => (
                format!("TYPE bg %{number}"),
                format!("job {id} runs again (S), in the background; WAIT"),
            ),
            Step::FgCmd(number, id) => (
                format!("TYPE fg %{number}"),
                format!("job {id} runs and owns the terminal"),
            ),
            Step::Pause(ms) => (format!("PAUSE {ms} ms"), "no zombie".to_string()),
            Step::Eof => (
                "CLOSE (Ctrl-D)".to_string(),
                "the shell ends its jobs, reaps them, exits 0 within 1.5 s".to_string(),
            ),
        };
        let _ = writeln!(out, "{what:37} {expect}");
    }
    out
}
