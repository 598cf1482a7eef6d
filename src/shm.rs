//! shm — memory that forked processes really share, and locks that can live in it.
//!
//! After `fork`, parent and child have *copies* of each other's memory: a child's write is
//! invisible to the parent. To share, the memory must be mapped `MAP_SHARED` before the
//! fork (an anonymous private mapping, like the heap, is copied on write). [`SharedArray`]
//! is such a mapping, seen as an `ndarray` array; [`Shared`] holds one value;
//! [`ProcessLocks`] is a robust, process-shared pthread mutex and a process-shared POSIX
//! semaphore, initialised to work across processes, inside such a mapping.
//!
//! Nothing here has a name: the mappings vanish with the last process that has them, so
//! nothing is ever left in /dev/shm.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::ptr::NonNull;

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayView1, ArrayViewMut1};
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// Maps `bytes` of zeroed memory, shared with every child forked afterwards.
///
/// # References: mmap(2) MAP_SHARED | MAP_ANONYMOUS
fn map_shared(bytes: usize) -> nix::Result<NonNull<libc::c_void>> {
    let length = NonZeroUsize::new(bytes.max(1)).expect("at least one byte");
    // SAFETY: a fresh anonymous mapping aliases nothing; we own it until munmap.
    unsafe {
        mmap_anonymous(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
}

/// Element types for which all-zero bytes are a valid value, so that a fresh (zeroed)
/// mapping holds valid elements.
///
/// # Safety
/// Implement it only for types whose all-zero bit pattern is a valid value.
pub unsafe trait Zeroable {}
// SAFETY: zero is a valid integer, float and atomic.
unsafe impl Zeroable for u64 {}
// SAFETY: as above.
unsafe impl Zeroable for f64 {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicU64 {}

/// An array of `n` elements in shared memory, zero-filled.
///
/// Other processes may read and write the same memory at any time; that is the point.
/// The demos keep it sound: elements that several processes change at once are atomics
/// ([`SharedArray::atomics`]), and plain elements are written by one process at a time
/// (the parent before the fork, a child after it, never both at once).
pub struct SharedArray<E> {
    ptr: NonNull<E>,
    len: usize,
}

impl<E: Zeroable> SharedArray<E> {
    /// Maps `len` zeroed elements.
    pub fn zeroed(len: usize) -> nix::Result<SharedArray<E>> {
        let bytes = len.checked_mul(size_of::<E>()).ok_or(Errno::ENOMEM)?;
        let ptr = map_shared(bytes)?.cast();
        Ok(SharedArray { ptr, len })
    }

    /// The array as `ndarray` sees it, for writing. Each process makes its own view.
    pub fn view(&mut self) -> ArrayViewMut1<'_, E> {
        // SAFETY: the mapping holds `len` valid (zeroed or written) elements and is page
        // aligned; `&mut self` makes this the only view in this process, and the demos
        // write plain elements from one process at a time (see the type's doc).
        unsafe { ArrayViewMut1::from_shape_ptr(self.len, self.ptr.as_ptr()) }
    }

    /// Reads the array.
    pub fn as_slice(&self) -> &[E] {
        // SAFETY: as in `view`; shared reads only.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty array.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<E> Drop for SharedArray<E> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by map_shared with this length, and no view
        // outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), (self.len * size_of::<E>()).max(1)) };
    }
}

impl SharedArray<AtomicU64> {
    /// The counters as `ndarray` sees them: atomics, which any process may change at any
    /// time, through shared references.
    pub fn atomics(&self) -> ArrayView1<'_, AtomicU64> {
        // SAFETY: the mapping holds `len` valid atomics (zero is valid), page aligned;
        // atomics may be shared and changed concurrently by definition.
        unsafe { ArrayView1::from_shape_ptr(self.len, self.ptr.as_ptr()) }
    }
}

/// Loads `counter` — a plain `mov` from memory, as `counter += 1` does; `Relaxed`
/// promises nothing about ordering, and keeps the compiler from merging a loop of
/// `load`/`store` into one addition.
pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Stores `value` in `counter` — a plain `mov` to memory. A [`load`] followed by a
/// `store` is not atomic: another process can store between them, and one of the two
/// updates is lost.
pub fn store(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed)
}

/// One value of type `T` in shared memory, made of atomics or other types that may be
/// shared across processes.
pub struct Shared<T> {
    ptr: NonNull<T>,
    owned: PhantomData<T>,
}

impl<T: Sync> Shared<T> {
    /// Maps a zeroed `T`; all-zero bytes must be a valid `T` (atomics and integers are).
    ///
    /// # Safety
    /// `T` must be valid when all its bytes are zero.
    pub unsafe fn zeroed() -> nix::Result<Shared<T>> {
        Ok(Shared {
            ptr: map_shared(size_of::<T>())?.cast(),
            owned: PhantomData,
        })
    }
}

impl<T: Sync> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping holds a valid T for as long as `self` lives; T is Sync, so
        // shared references to it may be used from anywhere.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; drop T in place, then unmap it. (A forked child
        // leaves with _exit and never gets here.)
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            let _ = munmap(self.ptr.cast(), size_of::<T>().max(1));
        }
    }
}

/// A robust process-shared pthread mutex and a process-shared POSIX semaphore (value 1),
/// for use inside a [`Shared`] mapping.
#[repr(C)]
pub struct ProcessLocks {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    semaphore: UnsafeCell<libc::sem_t>,
}

// SAFETY: the pthread functions and sem_* functions synchronise access themselves.
unsafe impl Sync for ProcessLocks {}

/// How [`ProcessLocks::lock`] got the mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// The usual way.
    Acquired,
    /// Its previous holder died holding it (EOWNERDEAD); the mutex was made consistent
    /// again, and what it protects may be half-updated.
    OwnerDied,
}

impl ProcessLocks {
    /// Maps and initialises the locks: the mutex `PTHREAD_PROCESS_SHARED` and
    /// `PTHREAD_MUTEX_ROBUST`, the semaphore shared between processes with value 1.
    ///
    /// # References: pthread_mutexattr_setpshared(3), pthread_mutexattr_setrobust(3),
    /// sem_init(3)
    pub fn new() -> nix::Result<Shared<ProcessLocks>> {
        // SAFETY: zeroed bytes are a valid (uninitialised-but-harmless) pthread_mutex_t
        // and sem_t; both are initialised below before any use.
        let locks: Shared<ProcessLocks> = unsafe { Shared::zeroed()? };
        // SAFETY: the attribute lives on this stack frame only; the mutex and semaphore
        // live in the mapping and are initialised exactly once, before any fork.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            check(libc::pthread_mutexattr_setpshared(
                attr.as_mut_ptr(),
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_mutexattr_setrobust(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ROBUST,
            ))?;
            check(libc::pthread_mutex_init(locks.mutex.get(), attr.as_ptr()))?;
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            Errno::result(libc::sem_init(locks.semaphore.get(), 1, 1))?;
        }
        Ok(locks)
    }

    /// Locks the mutex; if its holder died, recovers it with `pthread_mutex_consistent`.
    ///
    /// # References: pthread_mutex_lock(3), pthread_mutex_consistent(3)
    pub fn lock(&self) -> nix::Result<Locked> {
        // SAFETY: the mutex was initialised in `new` and lives as long as `self`.
        match unsafe { libc::pthread_mutex_lock(self.mutex.get()) } {
            0 => Ok(Locked::Acquired),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex now (EOWNERDEAD means acquired).
                check(unsafe { libc::pthread_mutex_consistent(self.mutex.get()) })?;
                Ok(Locked::OwnerDied)
            }
            error => Err(Errno::from_raw(error)),
        }
    }

    /// Unlocks the mutex.
    pub fn unlock(&self) -> nix::Result<()> {
        // SAFETY: the caller holds the mutex.
        check(unsafe { libc::pthread_mutex_unlock(self.mutex.get()) })
    }

    /// `sem_wait`: takes the semaphore (value 1 -> 0), sleeping while it is 0.
    ///
    /// # References: sem_wait(3)
    pub fn wait(&self) -> nix::Result<()> {
        loop {
            // SAFETY: the semaphore was initialised in `new`.
            match Errno::result(unsafe { libc::sem_wait(self.semaphore.get()) }) {
                Err(Errno::EINTR) => continue,
                other => return other.map(drop),
            }
        }
    }

    /// `sem_post`: gives the semaphore back.
    ///
    /// # References: sem_post(3)
    pub fn post(&self) -> nix::Result<()> {
        // SAFETY: the semaphore was initialised in `new`.
        Errno::result(unsafe { libc::sem_post(self.semaphore.get()) }).map(drop)
    }
}

impl Drop for ProcessLocks {
    fn drop(&mut self) {
        // SAFETY: nobody uses the locks any more (the workers have been reaped).
        unsafe {
            libc::pthread_mutex_destroy(self.mutex.get());
            libc::sem_destroy(self.semaphore.get());
        }
    }
}

fn check(result: libc::c_int) -> nix::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_reads_back_what_its_view_wrote() {
        let mut array = SharedArray::<u64>::zeroed(8).expect("mmap");
        array.view()[3] = 7;
        assert_eq!(array.as_slice(), &[0, 0, 0, 7, 0, 0, 0, 0]);
        let counters = SharedArray::<AtomicU64>::zeroed(2).expect("mmap");
        store(&counters.atomics()[1], load(&counters.atomics()[1]) + 1);
        assert_eq!(load(&counters.as_slice()[1]), 1);
    }

    #[test]
    fn an_impossible_size_is_an_error_not_a_short_mapping() {
        assert!(SharedArray::<u64>::zeroed(usize::MAX / 4).is_err());
    }

    #[test]
    fn the_locks_lock_and_unlock() {
        let locks = ProcessLocks::new().expect("locks");
        assert_eq!(locks.lock(), Ok(Locked::Acquired));
        locks.unlock().expect("unlock");
        locks.wait().expect("sem_wait");
        locks.post().expect("sem_post");
    }
}
