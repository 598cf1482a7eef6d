//! pty — a pseudo-terminal of the program's own, for the job-control programs.
//!
//! Job control needs a terminal: a controlling terminal for a session, a foreground group
//! that the terminal's Ctrl-C and Ctrl-Z reach. A test or a fault grid runs the programs
//! with no terminal at all, so each program that needs one opens a pseudo-terminal: a
//! *master* end, which plays the keyboard and the screen (what is written there is read
//! by the line discipline as typed), and a *slave* end, `/dev/pts/N`, which the programs
//! use as their terminal. `demos/jobs/sessions.rs` writes the calls out; this wrapper
//! serves the programs after it.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// A new pseudo-terminal: its master end, and the path of its slave end.
pub struct Pty {
    /// The master end: write here to type, read here to see what the terminal shows.
    pub master: OwnedFd,
    /// The slave end's path (`/dev/pts/N`): open it to use the terminal.
    pub slave: PathBuf,
}

/// Opens a pseudo-terminal: `posix_openpt(O_RDWR | O_NOCTTY)`, `grantpt`, `unlockpt`,
/// `ptsname_r`. The slave is not opened: a session leader that opens it without
/// `O_NOCTTY` makes it its controlling terminal.
///
/// # References: posix_openpt(3), grantpt(3), unlockpt(3), ptsname(3), pty(7)
pub fn open() -> anyhow::Result<Pty> {
    // SAFETY: posix_openpt takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        anyhow::bail!("posix_openpt: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt and unlockpt take a descriptor and touch no memory of ours.
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        anyhow::bail!("grantpt/unlockpt: {}", std::io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: ptsname_r writes at most name.len() bytes, NUL included, into `name`.
    let error = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if error != 0 {
        anyhow::bail!("ptsname_r: {}", std::io::Error::from_raw_os_error(error));
    }
    // SAFETY: on success `name` holds a NUL-terminated string.
    let slave = unsafe { CStr::from_ptr(name.as_ptr()) };
    Ok(Pty {
        master,
        slave: PathBuf::from(slave.to_string_lossy().into_owned()),
    })
}
