//! lock — the answer key: W worker processes add to the grader's counter under its
//! robust, process-shared mutex.
//!
//! Contract: labs/lock/README.md. Map the region PROCLAB_SHM names; fork
//! PROCLAB_WORKERS workers; each does PROCLAB_ADDS adds, each add inside the mutex:
//! probe += 1, read the counter, sleep PROCLAB_HOLD_US µs, write it plus one, probe -= 1.
//! A lock that returns EOWNERDEAD (the last holder died inside) is made consistent and
//! used. Reap every worker, exit 0.
//! Grade: cargo run -p labs --bin grade -- lock --submission labs/lock/solution.rs

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

// ANCHOR: section
fn work(shared: &Shared, adds: u64, hold: Duration) -> Result<(), Box<dyn Error>> {
    for _ in 0..adds {
        lock(shared.mutex)?;
        shared.probe.fetch_add(1, Ordering::SeqCst);
        let value = shared.counter.load(Ordering::SeqCst);
        std::thread::sleep(hold); // inside the section: without the lock, updates are lost
        shared.counter.store(value + 1, Ordering::SeqCst);
        shared.probe.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: the mutex is initialised (by the grader) and held by this process.
        unsafe { libc::pthread_mutex_unlock(shared.mutex) };
    }
    Ok(())
}

/// pthread_mutex_lock, which sleeps in the kernel while another process holds it. If
/// the holder died inside its section the lock is ours with EOWNERDEAD: the data is as
/// the dead holder left it (here: its add not done), and the mutex must be marked
/// consistent before it is unlocked, or it becomes unusable (ENOTRECOVERABLE).
fn lock(mutex: *mut libc::pthread_mutex_t) -> Result<(), Box<dyn Error>> {
    // SAFETY: `mutex` points to the grader's initialised, process-shared robust mutex.
    match unsafe { libc::pthread_mutex_lock(mutex) } {
        0 => Ok(()),
        libc::EOWNERDEAD => {
            // SAFETY: this process holds the mutex (EOWNERDEAD means it was acquired).
            unsafe { libc::pthread_mutex_consistent(mutex) };
            Ok(())
        }
        error => Err(format!(
            "pthread_mutex_lock: {}",
            std::io::Error::from_raw_os_error(error)
        )
        .into()),
    }
}
// ANCHOR_END: section
