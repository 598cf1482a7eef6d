//! region — the grader's shared memory for the lock lab: a robust, process-shared mutex
//! the grader initialises, the counter, and the probe.
//!
//! Layout (labs/lock/README.md): bytes 0..64 the `pthread_mutex_t`, 64..72 the counter
//! (u64), 72..76 the probe (u32: how many workers are inside the section). The grader
//! reads the mutex's lock word itself: for a robust mutex the kernel's robust-futex
//! protocol keeps the owner's thread id in its low 30 bits (`FUTEX_TID_MASK`), which is
//! how the grader knows whom to stop and whom to kill.
//!
//! # References: pthread_mutexattr_setrobust(3), pthread_mutexattr_setpshared(3),
//! shm_open(3), futex(2) ("Robust futexes")

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open};
use nix::sys::stat::Mode;

use crate::session::Session;

pub const SIZE: usize = 4096;
const COUNTER: usize = 64;
const PROBE: usize = 72;

pub struct Region {
    base: NonNull<libc::c_void>,
    pub name: String,
}

impl Region {
    /// Creates the region `what` (unlinked by the session) and initialises its mutex.
    pub fn create(session: &mut Session, what: &str) -> anyhow::Result<Region> {
        let name = session.ipc_name(what);
        let fd = shm_open(
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::from_bits_truncate(0o600),
        )?;
        nix::unistd::ftruncate(&fd, SIZE as i64)?;
        let length = std::num::NonZeroUsize::new(SIZE).expect("SIZE is not 0");
        // SAFETY: a fresh shared mapping of a region this process just sized; no Rust
        // reference points into it yet.
        let base = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        let region = Region { base, name };
        let mutex = region.base.as_ptr().cast::<libc::pthread_mutex_t>();
        // SAFETY: `attr` is initialised before use and destroyed after; `mutex` points to
        // 64 zeroed, page-aligned bytes of the mapping, enough for a pthread_mutex_t, and
        // no other process maps the region before the program is started.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            let made = libc::pthread_mutex_init(mutex, attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            anyhow::ensure!(made == 0, "pthread_mutex_init: error {made}");
        }
        Ok(region)
    }

    fn word<T>(&self, offset: usize) -> &T {
        // SAFETY: offsets 0, 64 and 72 are inside the mapping and aligned for u32/u64;
        // the mapping lives as long as `self`, and other processes change these words
        // only with atomic instructions (the mutex) or through atomics (counter, probe).
        unsafe { &*self.base.as_ptr().byte_add(offset).cast::<T>() }
    }

    /// The thread id that holds the mutex, from its lock word; `None` when it is free.
    pub fn owner(&self) -> Option<i32> {
        let lock = self.word::<AtomicU32>(0).load(Ordering::SeqCst);
        let tid = lock & libc::FUTEX_TID_MASK;
        (tid != 0).then_some(tid as i32)
    }

    pub fn counter(&self) -> u64 {
        self.word::<AtomicU64>(COUNTER).load(Ordering::SeqCst)
    }

    pub fn probe(&self) -> &AtomicU32 {
        self.word::<AtomicU32>(PROBE)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once; no reference outlives self.
        let _ = unsafe { munmap(self.base, SIZE) };
    }
}
