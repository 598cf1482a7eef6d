//! lock — your program: W worker processes add to the grader's counter, safely.
//!
//! The contract is in labs/lock/README.md (and the book's Labs part). In short:
//! - PROCLAB_SHM names a shared-memory region the grader created: a process-shared,
//!   robust pthread_mutex_t at byte 0 (already initialised), the counter (u64) at 64,
//!   the probe (u32) at 72;
//! - fork PROCLAB_WORKERS workers; each does PROCLAB_ADDS adds, each add inside the
//!   mutex: probe += 1, read the counter, sleep PROCLAB_HOLD_US µs, write it plus one,
//!   probe -= 1;
//! - a worker may be stopped or killed by the grader while it holds the mutex;
//! - reap every worker, then exit 0.
//!
//! Grade it: cargo run -p labs --bin grade -- lock --submission labs/lock/starter.rs

use std::error::Error;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, shm_open};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

/// The region's layout (the contract): the mutex at 0, the counter at 64, the probe at 72.
struct Shared {
    mutex: *mut libc::pthread_mutex_t,
    counter: &'static AtomicU64,
    probe: &'static AtomicU32,
}

fn number(name: &str) -> Result<u64, Box<dyn Error>> {
    Ok(std::env::var(name)?.parse()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::var("PROCLAB_SHM")?;
    let (workers, adds) = (number("PROCLAB_WORKERS")?, number("PROCLAB_ADDS")?);
    let hold = Duration::from_micros(number("PROCLAB_HOLD_US")?);
    let fd = shm_open(name.as_str(), OFlag::O_RDWR, Mode::empty())?;
    let length = NonZeroUsize::new(4096).expect("4096 is not 0");
    let flags = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a shared mapping of the grader's 4096-byte region; it stays mapped until
    // the process exits, so the 'static references below never dangle.
    let base = unsafe { mmap(None, length, flags, MapFlags::MAP_SHARED, &fd, 0)? }.as_ptr();
    // SAFETY: offsets 64 and 72 are inside the region and aligned; every process touches
    // these words only through atomics.
    let shared = unsafe {
        Shared {
            mutex: base.cast(),
            counter: &*base.byte_add(64).cast::<AtomicU64>(),
            probe: &*base.byte_add(72).cast::<AtomicU32>(),
        }
    };
    let mut pids = Vec::new();
    for _ in 0..workers {
        // SAFETY: single-threaded; the child only locks, sleeps, adds and exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                let code = match work(&shared, adds, hold) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                std::process::exit(code);
            }
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    for pid in pids {
        waitpid(pid, None)?; // a worker the grader killed is reaped like any other
    }
    Ok(())
}

fn work(shared: &Shared, adds: u64, hold: Duration) -> Result<(), Box<dyn Error>> {
    for _ in 0..adds {
        lock(shared.mutex)?;
        shared.probe.fetch_add(1, Ordering::SeqCst);
        let value = shared.counter.load(Ordering::SeqCst);
        std::thread::sleep(hold);
        shared.counter.store(value + 1, Ordering::SeqCst);
        shared.probe.fetch_sub(1, Ordering::SeqCst);
        // TODO: unlock the mutex (libc::pthread_mutex_unlock).
    }
    Ok(())
}

fn lock(mutex: *mut libc::pthread_mutex_t) -> Result<(), Box<dyn Error>> {
    // TODO: lock the mutex with libc::pthread_mutex_lock. It returns 0, or an error
    //       number; which one means the last holder died while it held the mutex, and
    //       what must you call before you go on?
    let _ = mutex;
    Ok(())
}
