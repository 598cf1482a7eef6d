//! shm — memory that forked processes really share, and locks that can live in it.
//!
//! After `fork`, parent and child have *copies* of each other's memory: a child's write is
//! invisible to the parent. To share, the memory must be mapped `MAP_SHARED` before the
//! fork (an anonymous private mapping, like the heap, is copied on write). [`SharedArray`]
//! is such a mapping, seen as an `ndarray` array; [`SharedValue`] holds one value;
//! [`ProcessLocks`] is a robust, process-shared pthread mutex and a process-shared POSIX
//! semaphore, initialised to work across processes, inside such a mapping.
//!
//! These are the wrappers for what the shared-memory programs write out first:
//! `demos/shared/shared_mutex.rs` (mmap MAP_SHARED, PTHREAD_PROCESS_SHARED) and
//! `demos/shared/robust_mutex.rs` (PTHREAD_MUTEX_ROBUST, EOWNERDEAD); the semaphore's
//! `sem_init` is shown by the shared_array chapter, from this file.
//!
//! Nothing here has a name: the mappings vanish with the last process that has them, so
//! nothing is ever left in /dev/shm.
//!
//! Plumbing of those programs too: reaping the workers ([`reap_workers`]), and the wording
//! of their table rows and summaries.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::ptr::NonNull;

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayView1, ArrayViewMut1};
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use crate::narrate::event;

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
        // SAFETY: the mapping holds `len` valid elements (zeroed, and `E: Zeroable`, or
        // written since) and is page aligned; `&mut self` makes this the only view in this
        // process. Nothing here can stop another process writing the same elements at the
        // same time: that is the rule of the type's doc, which the demos keep.
        unsafe { ArrayViewMut1::from_shape_ptr(self.len, self.ptr.as_ptr()) }
    }

    /// Reads the array.
    pub fn as_slice(&self) -> &[E] {
        // SAFETY: as in `view` (valid, aligned, and the same rule for other processes);
        // this process only reads through it.
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
pub struct SharedValue<T> {
    ptr: NonNull<T>,
    owned: PhantomData<T>,
}

impl<T: Sync> SharedValue<T> {
    /// Maps a zeroed `T`; all-zero bytes must be a valid `T` (atomics and integers are).
    ///
    /// # Safety
    /// `T` must be valid when all its bytes are zero.
    ///
    /// # References: mmap(2) MAP_SHARED | MAP_ANONYMOUS
    pub unsafe fn zeroed() -> nix::Result<SharedValue<T>> {
        Ok(SharedValue {
            ptr: map_shared(size_of::<T>())?.cast(),
            owned: PhantomData,
        })
    }
}

impl<T: Sync> Deref for SharedValue<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping holds a valid T (zeroed, which `zeroed`'s caller promised is
        // valid) until `self` is dropped; T is Sync, so shared references may be used from
        // anywhere.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for SharedValue<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `zeroed` with this size and holds a valid T; no
        // reference from `deref` outlives `self`. A forked child's copy of `self` is never
        // dropped (child::run_then_exit ends in _exit), so T is dropped once, by the process
        // that made it; munmap removes only this process's view of the pages.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            let _ = munmap(self.ptr.cast(), size_of::<T>().max(1));
        }
    }
}

/// A robust process-shared pthread mutex and a process-shared POSIX semaphore (value 1),
/// for use inside a [`SharedValue`] mapping.
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

/// The mutex of a [`ProcessLocks`], held: it exists only while this process holds the
/// mutex, and dropping it unlocks the mutex.
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
pub struct MutexGuard<'a> {
    locks: &'a ProcessLocks,
    how: Locked,
}

impl MutexGuard<'_> {
    /// How the mutex was got: [`Locked::OwnerDied`] if its previous holder died with it.
    pub fn how(&self) -> Locked {
        self.how
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard is made only by `lock`, after pthread_mutex_lock gave this
        // process the mutex, and there is one guard per lock: this process holds it.
        unsafe { libc::pthread_mutex_unlock(self.locks.mutex.get()) };
    }
}

impl ProcessLocks {
    /// Maps and initialises the locks: the mutex `PTHREAD_PROCESS_SHARED` and
    /// `PTHREAD_MUTEX_ROBUST`, the semaphore shared between processes with value 1.
    ///
    /// # Safety
    /// Every other process that uses the locks must have ended (been reaped) before the
    /// returned value is dropped: dropping destroys them, and destroying a mutex or a
    /// semaphore that another process is waiting for is undefined (pthread_mutex_destroy(3),
    /// sem_destroy(3)).
    ///
    /// # References: pthread_mutexattr_setpshared(3), pthread_mutexattr_setrobust(3),
    /// sem_init(3)
    pub unsafe fn new() -> nix::Result<SharedValue<ProcessLocks>> {
        // SAFETY: zeroed bytes are a valid (uninitialised-but-harmless) pthread_mutex_t
        // and sem_t; both are initialised below before any use.
        let locks: SharedValue<ProcessLocks> = unsafe { SharedValue::zeroed()? };
        // SAFETY: the attribute lives on this stack frame only and is initialised before
        // use; the mutex lives in the fresh mapping, which no other process has yet, and
        // is initialised exactly once.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            pthread_result(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            pthread_result(libc::pthread_mutexattr_setpshared(
                attr.as_mut_ptr(),
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            pthread_result(libc::pthread_mutexattr_setrobust(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ROBUST,
            ))?;
            pthread_result(libc::pthread_mutex_init(locks.mutex.get(), attr.as_ptr()))?;
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        // ANCHOR: sem_init
        // SAFETY: the semaphore lives in the fresh shared mapping, which no other process
        // has yet, and is initialised exactly once.
        let result = unsafe {
            libc::sem_init(
                locks.semaphore.get(), // in the MAP_SHARED mapping, so children share it
                1,                     // pshared: used by several processes, not threads
                1,                     // the value: one process at a time may pass sem_wait
            )
        };
        // ANCHOR_END: sem_init
        Errno::result(result)?;
        Ok(locks)
    }

    /// Locks the mutex, sleeping while another process holds it; if its holder died,
    /// recovers it with `pthread_mutex_consistent`. The guard unlocks it when dropped.
    ///
    /// # References: pthread_mutex_lock(3), pthread_mutex_consistent(3)
    pub fn lock(&self) -> nix::Result<MutexGuard<'_>> {
        // SAFETY: the mutex was initialised in `new` and lives as long as `self`.
        let how = match unsafe { libc::pthread_mutex_lock(self.mutex.get()) } {
            0 => Locked::Acquired,
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD means this process got the mutex; it is initialised.
                pthread_result(unsafe { libc::pthread_mutex_consistent(self.mutex.get()) })?;
                Locked::OwnerDied
            }
            error => return Err(Errno::from_raw(error)),
        };
        Ok(MutexGuard { locks: self, how })
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

    /// `sem_post`: gives the semaphore back. Unlike a mutex, a semaphore has no owner:
    /// any process may post it.
    ///
    /// # References: sem_post(3)
    pub fn post(&self) -> nix::Result<()> {
        // SAFETY: the semaphore was initialised in `new`.
        Errno::result(unsafe { libc::sem_post(self.semaphore.get()) }).map(drop)
    }
}

impl Drop for ProcessLocks {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `new`, whose caller promised that every other
        // process using them has ended: nobody waits for them. A process that died inside
        // its critical section left the robust mutex locked; trylock takes it (EOWNERDEAD)
        // so that it is unlocked before being destroyed, as pthread_mutex_destroy(3) asks.
        // No guard is alive (a guard borrows `self`).
        unsafe {
            let mutex = self.mutex.get();
            match libc::pthread_mutex_trylock(mutex) {
                0 => libc::pthread_mutex_unlock(mutex),
                libc::EOWNERDEAD => {
                    libc::pthread_mutex_consistent(mutex);
                    libc::pthread_mutex_unlock(mutex)
                }
                _ => 0,
            };
            libc::pthread_mutex_destroy(mutex);
            libc::sem_destroy(self.semaphore.get());
        }
    }
}

/// A pthread function's result as a `Result`: pthread functions return the error number
/// (0 for success) instead of setting errno.
///
/// # References: pthreads(7) "Return values from pthreads functions"
pub fn pthread_result(result: libc::c_int) -> nix::Result<()> {
    match result {
        0 => Ok(()),
        error => Err(Errno::from_raw(error)),
    }
}

/// One row of the shared-memory programs' tables: `workers` processes added 1 to one count
/// `iterations` times each with `lock`; what was expected, what was got, how fast. Its
/// JSON fields are the `result` event's: `lock`, `workers`, `iterations`, `expected`,
/// `got`, `lost`, `seconds`, `ops_per_s`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CountRow {
    pub lock: String,
    pub workers: u32,
    pub iterations: u64,
    pub expected: u64,
    pub got: u64,
    pub lost: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
}

impl CountRow {
    /// The row of a run that should have counted `expected` and counted `got`.
    pub fn new(
        lock: &str,
        (workers, iterations): (u32, u64),
        expected: u64,
        got: u64,
        seconds: f64,
    ) -> CountRow {
        let (lock, lost, ops_per_s) = (
            lock.to_owned(),
            expected.saturating_sub(got),
            got as f64 / seconds,
        );
        CountRow {
            lock,
            workers,
            iterations,
            expected,
            got,
            lost,
            seconds,
            ops_per_s,
        }
    }
}

/// Kills and reaps every child left when dropped. Declared after a [`ProcessLocks`] (so
/// dropped before it), it keeps the promise of [`ProcessLocks::new`] on every way out of a
/// function: an error, a stop, a failed fork.
pub struct ReapOnDrop;

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        crate::child::end_all_children(); // SIGKILL, then waitpid, for each child left
    }
}

/// A clap value parser for `--elements`: a count from 1 to 2^40 of `element_bytes`-byte
/// elements of which `copies` must fit in the memory available now (MemAvailable in
/// /proc/meminfo) — refused with the numbers, rather than died of when mmap or the
/// allocator fails halfway.
///
/// # References: proc_meminfo(5)
pub fn elements_that_fit(
    element_bytes: u64,
    copies: u64,
) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |text| {
        let elements = (text.trim().parse::<u64>().ok())
            .filter(|elements| (1..=1 << 40).contains(elements))
            .ok_or_else(|| format!("{text:?} is not a count from 1 to 2^40"))?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let available_mib = (meminfo.lines())
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(u64::MAX, |kib| kib / 1024);
        let needed_mib = elements.saturating_mul(element_bytes * copies) >> 20;
        if needed_mib > available_mib {
            return Err(format!(
                "{elements} elements need about {needed_mib} MiB, more than the {available_mib} \
                 MiB available (MemAvailable in /proc/meminfo)"
            ));
        }
        Ok(elements as usize)
    }
}

/// Reaps `count` workers, whichever ends first (a worker killed while holding a lock must
/// not leave the parent waiting on one blocked behind it: see `child::wait_for_any`). An
/// error if a stop signal came (the count then means nothing) or a worker did not exit 0.
///
/// # References: waitpid(2)
pub fn reap_workers(count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        let status = crate::child::wait_for_any()?;
        crate::signals::bail_if_stopped()?; // interrupted: the count means nothing
        let (pid, ended) = (
            status.pid().map_or(0, nix::unistd::Pid::as_raw),
            crate::child::describe(&status),
        );
        anyhow::ensure!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "worker {pid} {ended}"
        );
    }
    Ok(())
}

/// The header of shared_array's table, whose rows [`CountRow::say_in_table`] writes.
pub const TABLE_HEADER: &str = "lock                     workers iterations     expected          got       lost  seconds        ops/s";

impl CountRow {
    /// Narrates the row as a `result` event, one line of shared_array's table.
    pub fn say_in_table(&self) {
        let CountRow {
            lock: name,
            workers,
            iterations,
            expected,
            got,
            lost,
            seconds,
            ops_per_s,
        } = self;
        event("result").fields(self).say(format!(
            "{name:<24} {workers:>7} {iterations:>10} {expected:>12} {got:>12} {lost:>10} {seconds:>8.4} {ops_per_s:>12.3e}"
        ));
    }
}

/// Narrates shared_array's `summary`: how many strategies counted exactly, and what `none`
/// lost (even 0: that is the news).
pub fn say_table_summary(rows: &[CountRow]) {
    let (exact, total) = (rows.iter().filter(|row| row.lost == 0).count(), rows.len());
    let strategies = if total == 1 { "strategy" } else { "strategies" };
    let none = rows.iter().find(|row| row.lock == "none");
    let note = none.map_or(String::new(), |row| format!("; `none` lost {}", row.lost));
    event("summary").field("strategies", rows).say(format!(
        "summary: {exact} of {total} {strategies} exact{note}"
    ));
}

/// Narrates shared_mutex's `summary`: W workers × I additions under one mutex, against
/// what was counted.
pub fn say_mutex_summary(workers: u32, iterations: u64, got: u64, seconds: f64) {
    let expected = u64::from(workers) * iterations;
    let row = CountRow::new("mutex", (workers, iterations), expected, got, seconds);
    let (s, lost) = (if workers == 1 { "" } else { "s" }, row.lost);
    event("summary").fields(&row).say(format!(
        "summary: {workers} worker{s} × {iterations} additions under one mutex: \
         expected {expected}, got {got}, lost {lost} ({seconds:.3} s)"
    ));
}

/// Narrates robust_mutex's `result` and `summary`: one of `workers` died holding the
/// mutex; the other W - 1 added `iterations` each.
pub fn say_robust_summary(workers: u32, iterations: u64, got: u64, seconds: f64) {
    let (survivors, expected) = (workers - 1, u64::from(workers - 1) * iterations);
    let row = CountRow::new("mutex", (workers, iterations), expected, got, seconds);
    let (lost, ops_per_s) = (row.lost, row.ops_per_s);
    let others = if survivors == 1 { "other" } else { "others" };
    event("result").fields(&row).say(format!(
        "mutex: one worker died holding it; the {survivors} {others}: expected {expected}, \
         got {got}, lost {lost} ({seconds:.4} s, {ops_per_s:.3e} ops/s)"
    ));
    event("summary").field("strategies", [&row]).say(format!(
        "summary: the mutex outlived its holder; {got} of the {expected} additions counted"
    ));
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
    fn the_mutex_is_unlocked_when_its_guard_drops() {
        // SAFETY: no other process uses these locks.
        let locks = unsafe { ProcessLocks::new() }.expect("locks");
        let held = locks.lock().expect("lock");
        assert_eq!(held.how(), Locked::Acquired);
        // SAFETY: the mutex is initialised; trylock does not block.
        let busy = unsafe { libc::pthread_mutex_trylock(locks.mutex.get()) };
        assert_eq!(busy, libc::EBUSY, "held while the guard lives");
        drop(held);
        drop(locks.lock().expect("lock again after the guard dropped"));
        locks.wait().expect("sem_wait");
        locks.post().expect("sem_post");
    }
}
