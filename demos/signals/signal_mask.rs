//! signal_mask — a blocked signal waits, pending; standard signals merge, real-time ones queue.
//!
//! Demonstrates: sigprocmask(SIG_BLOCK) keeps a signal from being delivered; the kernel
//! marks it pending (ShdPnd in /proc/<pid>/status). Five SIGUSR1 sent while blocked are
//! one pending bit and one delivery on unblock; five SIGRTMIN are queued with their
//! values and delivered five times, in the order they were sent.
//! Run:     cargo run --bin signal_mask           (add -- --hold 30 to look in /proc)
//! Observe: SIGUSR1 handled once, SIGRTMIN five times with values 1 2 3 4 5.
//! Book:    book/src/signals/signals.md

use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use proclab::narrate::event;
use proclab::{cli, narrate, signals, sigstate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let (usr1, rtmin) = (libc::SIGUSR1, libc::SIGRTMIN());
    install_handler(usr1)?;
    install_handler(rtmin)?;
    // ANCHOR: block
    // SAFETY: sigset_t is plain data; sigemptyset and sigaddset only write into it.
    let mut both: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `both` is a valid sigset_t; the numbers are valid signals.
    unsafe {
        (
            libc::sigemptyset(&mut both),
            libc::sigaddset(&mut both, usr1),
            libc::sigaddset(&mut both, rtmin),
        )
    };
    set_mask(libc::SIG_BLOCK, &both)?; // from here on, both only become pending
    event("block").say("sigprocmask(SIG_BLOCK, {SIGUSR1, SIGRTMIN})");
    // ANCHOR_END: block

    // ANCHOR: send
    let me = std::process::id() as libc::pid_t;
    for value in 1..=args.count {
        // SAFETY: kill(2) takes two numbers.
        check(unsafe { libc::kill(me, usr1) }, "kill(SIGUSR1)")?; // the same pending bit
        let sigval = libc::sigval {
            sival_ptr: value as usize as *mut libc::c_void,
        };
        // SAFETY: sigqueue(3) takes a pid, a signal and a value (the kernel copies it).
        let queued = unsafe { libc::sigqueue(me, rtmin, sigval) }; // one more in the queue
        check(queued, "sigqueue(SIGRTMIN)")?;
    }
    event("sent").field("count", args.count).say(format!(
        "sent {0} x kill(SIGUSR1) and {0} x sigqueue(SIGRTMIN, 1..={0})",
        args.count
    ));
    // ANCHOR_END: send

    // ANCHOR: pending
    let sets = sigstate::signal_sets(me)?;
    let (pending, blocked) = (
        sigstate::names(sets.process_pending),
        sigstate::names(sets.blocked),
    );
    event("pending")
        .field("pending", &pending)
        .field("blocked", &blocked)
        .field("delivered", LOGGED.load(Ordering::SeqCst))
        .say(format!("kernel says: pending {pending:?}, blocked {blocked:?} (ShdPnd, SigBlk); nothing delivered yet"));
    if !signals::sleep(args.hold) {
        return Ok(()); // Ctrl-C while holding: run_stoppable dies by it
    }
    set_mask(libc::SIG_UNBLOCK, &both)?; // the handlers run before this returns
    // ANCHOR_END: pending

    let delivered: Vec<(String, i64)> = LOG[..LOGGED.load(Ordering::SeqCst).min(LOG.len())]
        .iter()
        .map(|entry| {
            let entry = entry.load(Ordering::SeqCst);
            (sigstate::name((entry >> 32) as i32), entry & 0xffff_ffff)
        })
        .collect();
    for (name, value) in &delivered {
        event("delivered")
            .field("signal", name)
            .field("value", value)
            .say(format!("handler: {name}, value {value}"));
    }
    let of = |signal: &str| delivered.iter().filter(|(name, _)| name == signal).count();
    let values: Vec<i64> = delivered
        .iter()
        .filter(|(name, _)| name == "SIGRTMIN")
        .map(|entry| entry.1)
        .collect();
    event("summary")
        .field("sent_each", args.count)
        .field("usr1_delivered", of("SIGUSR1"))
        .field("rtmin_delivered", of("SIGRTMIN"))
        .field("rtmin_values", &values)
        .say(format!(
            "summary: {} SIGUSR1 sent, delivered {}; {} SIGRTMIN sent, delivered {} (values {values:?})",
            args.count,
            of("SIGUSR1"),
            args.count,
            of("SIGRTMIN")
        ));
    Ok(())
}

// ANCHOR: handler
/// What the handler saw, in order: signal number << 32 | the value sent with it.
static LOG: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];
static LOGGED: AtomicUsize = AtomicUsize::new(0);

/// An SA_SIGINFO handler: it appends the signal and its value to LOG (atomics only).
extern "C" fn record(signo: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t; si_value is set by sigqueue (0 for kill).
    let value = unsafe { (*info).si_value().sival_ptr } as i64;
    let slot = LOGGED.fetch_add(1, Ordering::SeqCst);
    if let Some(entry) = LOG.get(slot) {
        entry.store(((signo as i64) << 32) | value, Ordering::SeqCst);
    }
}
// ANCHOR_END: handler

/// sigaction(signo) with [`record`] and SA_SIGINFO, written out in libc: nix's `Signal`
/// has no real-time signals.
fn install_handler(signo: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is an empty mask and no flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = record as extern "C" fn(_, _, _) as usize; // the three-argument handler
    action.sa_flags = libc::SA_SIGINFO; // pass it the siginfo_t with the value
    // SAFETY: record only uses atomics; `action` is valid; no old action is asked for.
    check(
        unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) },
        "sigaction",
    )
}

/// sigprocmask(how, set) for this (single-threaded) process.
fn set_mask(how: libc::c_int, set: &libc::sigset_t) -> anyhow::Result<()> {
    // SAFETY: `set` is a valid sigset_t; the old mask is not asked for.
    check(
        unsafe { libc::sigprocmask(how, set, std::ptr::null_mut()) },
        "sigprocmask",
    )
}

fn check(result: libc::c_int, call: &str) -> anyhow::Result<()> {
    if result == -1 {
        anyhow::bail!("{call}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Block SIGUSR1 and SIGRTMIN, send each to yourself N times, read what is pending in
/// /proc/<pid>/status, then unblock: SIGUSR1 is handled once, SIGRTMIN N times, in order.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  signal_mask\n  signal_mask --hold 30      # \
                        then: grep -E 'Sig|ShdPnd' /proc/<pid>/status\n  signal_mask --count 20 --json"
)]
struct Args {
    /// How many of each signal to send while they are blocked (1-30).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=30))]
    count: u16,

    /// Keep them blocked and pending this long before unblocking (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
