//! names — private places for IPC objects, unique per user and per run.
//!
//! A FIFO or a socket placed directly in a shared directory such as /tmp can be found,
//! pre-created or replaced by another user, and two runs of the same demo would collide.
//! So each run makes its own directory with `mkdtemp` (mode 0700: only you can enter it),
//! named after your uid, and removes it when it is done.

use std::path::{Path, PathBuf};

use nix::unistd::{Uid, mkdtemp};

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
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and what it holds now.
    pub fn remove(&mut self) -> std::io::Result<()> {
        if !self.removed {
            std::fs::remove_dir_all(&self.path)?;
            self.removed = true;
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
