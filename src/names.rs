//! names — private places for IPC objects, unique per user and per run.
//!
//! A FIFO or a socket placed directly in a shared directory such as /tmp can be found,
//! pre-created or replaced by another user, and two runs of the same demo would collide.
//! So each run makes its own directory with `mkdtemp` (mode 0700: only you can enter it),
//! named after your uid, and removes it when it is done.

use std::path::{Path, PathBuf};

use nix::unistd::{Uid, mkdtemp};

/// A fresh directory, mode 0700, removed with everything in it when dropped (or earlier,
/// with [`PrivateDir::remove`]).
pub struct PrivateDir {
    path: PathBuf,
    removed: bool,
}

impl PrivateDir {
    /// Creates `$TMPDIR/proclab.<uid>.<random>` (or under /tmp).
    ///
    /// # References: mkdtemp(3)
    pub fn new() -> nix::Result<PrivateDir> {
        let template = std::env::temp_dir().join(format!("proclab.{}.XXXXXX", Uid::current()));
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
