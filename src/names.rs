//! names — private places for IPC objects, unique per user and per run.
//!
//! A FIFO or a socket placed directly in a shared directory such as /tmp can be found,
//! pre-created or replaced by another user, and two runs of the same demo would collide.
//! So each run makes its own directory with `mkdtemp` (mode 0700: only you can enter it),
//! named after your uid, and removes it when it is done — and, made with
//! [`PrivateDir::guarded`], even when it is killed with `kill -9`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid, Uid, fork, mkdir, mkdtemp, pipe2, read, write};

/// A name for a POSIX IPC object (message queue, shared memory) that no other user or run
/// will pick: `/proclab.<uid>.<pid>.<random>`. Create the object with `O_CREAT | O_EXCL`
/// and mode 0600, and unlink it as soon as every participant has it open.
///
/// # References: mq_overview(7), shm_overview(7)
pub fn ipc_name() -> String {
    format!(
        "/proclab.{}.{}.{:010}", // digits only: a transcript masks them like the pids
        Uid::current(),
        std::process::id(),
        random() as u32
    )
}

/// A random number from the kernel's generator, `/dev/urandom` (0 if it cannot be read):
/// for names and for choices a demo makes "at random", such as which worker to kill.
///
/// # References: random(4)
pub fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut source| std::io::Read::read_exact(&mut source, &mut bytes));
    u64::from_le_bytes(bytes)
}

/// A fresh directory, mode 0700, removed with everything in it when dropped (or earlier,
/// with [`PrivateDir::remove`]).
pub struct PrivateDir {
    path: PathBuf,
    removed: bool,
    guard: Option<(Pid, OwnedFd)>,
}

impl PrivateDir {
    /// Creates `$TMPDIR/proclab.<uid>.<random>`, or under /tmp when TMPDIR is unset, empty
    /// or relative (a relative TMPDIR would put the directory wherever the demo happens to
    /// run, as `mktemp` users know).
    ///
    /// # References: mkdtemp(3), environ(7) TMPDIR
    pub fn new() -> nix::Result<PrivateDir> {
        let template = temp_root().join(format!("proclab.{}.XXXXXX", Uid::current()));
        let path = mkdtemp(&template)?;
        Ok(PrivateDir {
            path,
            removed: false,
            guard: None,
        })
    }

    /// Like [`PrivateDir::new`] (named `proclab.<uid>.<pid>.<digits>`), but watched by a
    /// *guard*: a child, not bound to die with this process, that blocks reading a pipe
    /// whose only write end this process holds. The kernel closes that end however this
    /// process ends, `kill -9` included; the guard then reads EOF, removes the directory
    /// and everything in it, and exits. The guard is forked before the directory exists,
    /// so the directory is never unguarded. (mq_priorities writes the same guard out for
    /// its queue.) Ctrl-C to the process group does not end the guard: it ignores SIGINT
    /// and SIGHUP, and waits for its EOF.
    ///
    /// # Safety
    /// The caller must be single-threaded, as for any fork(2) that runs Rust code after it.
    ///
    /// # References: fork(2), pipe(7) "end of file", mkdir(2)
    pub unsafe fn guarded() -> anyhow::Result<PrivateDir> {
        loop {
            let path = temp_root().join(&ipc_name()[1..]); // digits: a transcript masks them
            let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?; // not exec'd
            // SAFETY: the caller promises a single-threaded process; the guard reads its
            // pipe, may remove the directory (which allocates) and calls _exit.
            let guard = match unsafe { fork() }.context("fork the guard")? {
                ForkResult::Child => crate::child::run_unbound_then_exit(|| {
                    drop(write_end);
                    let _ = crate::signals::ignore(Signal::SIGINT); // Ctrl-C is the demo's to clean up
                    let _ = crate::signals::ignore(Signal::SIGHUP);
                    let told = loop {
                        match read(&read_end, &mut [0u8; 1]) {
                            Err(Errno::EINTR) => continue,
                            result => break result.unwrap_or(0),
                        }
                    };
                    if told == 0 {
                        let _ = std::fs::remove_dir_all(&path); // EOF alone: the creator is gone
                    }
                    Ok(0)
                }),
                ForkResult::Parent { child } => child,
            };
            drop(read_end);
            let mut dir = PrivateDir {
                path,
                removed: false,
                guard: Some((guard, write_end)),
            };
            match mkdir(&dir.path, Mode::S_IRWXU) {
                Ok(()) => return Ok(dir),
                Err(Errno::EEXIST) => dir.dismiss_guard(), // not ours: another name
                Err(error) => {
                    dir.dismiss_guard();
                    return Err(error).with_context(|| format!("mkdir {}", dir.path.display()));
                }
            }
        }
    }

    /// The guard's pid, if the directory has one.
    pub fn guard(&self) -> Option<Pid> {
        self.guard.as_ref().map(|(pid, _)| *pid)
    }

    /// Tells the guard that nothing is left to remove (one byte, then EOF), and reaps it.
    fn dismiss_guard(&mut self) {
        self.removed = true;
        if let Some((pid, write_end)) = self.guard.take() {
            let _ = write(&write_end, b"x");
            drop(write_end);
            while let Err(Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and what it holds now.
    pub fn remove(&mut self) -> std::io::Result<()> {
        if !self.removed {
            match std::fs::remove_dir_all(&self.path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => self.dismiss_guard(),
            }
        }
        Ok(())
    }
}

/// `$TMPDIR` if it is an absolute path, otherwise `/tmp`.
fn temp_root() -> PathBuf {
    match std::env::var_os("TMPDIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from("/tmp"),
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ipc_names_are_per_user_per_run_and_unique() {
        let (first, second) = (ipc_name(), ipc_name());
        assert_ne!(first, second);
        let prefix = format!("/proclab.{}.{}.", Uid::current(), std::process::id());
        assert!(first.starts_with(&prefix), "{first}");
        assert_eq!(
            first.matches('/').count(),
            1,
            "one leading slash, as mq_open wants"
        );
    }

    #[test]
    fn a_private_dir_is_0700_unique_and_removed() {
        let (mut first, second) = (
            PrivateDir::new().expect("mkdtemp"),
            PrivateDir::new().expect("mkdtemp"),
        );
        assert_ne!(first.path(), second.path());
        let mode = std::fs::metadata(first.path())
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = first.path().to_owned();
        std::fs::write(path.join("x"), "x").expect("write inside");
        first.remove().expect("remove");
        assert!(!path.exists());
        let path = second.path().to_owned();
        drop(second);
        assert!(!path.exists());
    }
}
