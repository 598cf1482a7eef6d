//! fdio — whole messages over raw descriptors.
//!
//! `write(2)` on a pipe or socket may write less than asked, `read(2)` may return part of
//! a message, and both fail with EINTR when a caught signal arrives. The demos that move
//! messages need the loop that handles all three; it lives here once. A stop signal
//! (Ctrl-C) is not retried: the EINTR goes up, and the demo cleans up.

use std::os::fd::AsFd;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::unistd::{read, write};

use crate::signals;

/// Writes all of `bytes`, however many `write(2)` calls it takes.
///
/// # References: write(2)
pub fn write_all(fd: &impl AsFd, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        // A signal that interrupts a write which has already moved some bytes makes it
        // return the count, not EINTR: check for a stop at each step, and keep the steps
        // short (1 MiB) so that a stop is seen soon.
        signals::bail_if_stopped()?;
        match write(fd, &bytes[..bytes.len().min(1 << 20)]) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) if signals::stop_requested().is_none() => {}
            Err(error) => return Err(error).context("write"),
        }
    }
    Ok(())
}

/// Writes one small message — at most PIPE_BUF (4096) bytes — in a single `write(2)`,
/// which a pipe keeps whole: it never interleaves with another writer's message. EINTR is
/// retried even after a stop signal, unlike [`write_all`]: this is for the messages a
/// program must still send *because* it is stopping, such as stop requests to workers.
///
/// # References: write(2), pipe(7) "PIPE_BUF"
pub fn write_message(fd: &impl AsFd, message: &[u8]) -> nix::Result<()> {
    assert!(
        message.len() <= 4096,
        "a message longer than PIPE_BUF may be split"
    );
    loop {
        match write(fd, message) {
            Ok(n) if n == message.len() => return Ok(()),
            Ok(_) => return Err(Errno::EIO), // cannot happen on a pipe for ≤ PIPE_BUF
            Err(Errno::EINTR) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Fills `buffer` exactly; returns false at EOF before the first byte, fails at EOF in the
/// middle.
///
/// # References: read(2)
pub fn read_exact(fd: &impl AsFd, buffer: &mut [u8]) -> anyhow::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        signals::bail_if_stopped()?;
        match read(fd, &mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => bail!("EOF after {filled} of {} bytes", buffer.len()),
            Ok(n) => filled += n,
            Err(Errno::EINTR) if signals::stop_requested().is_none() => {}
            Err(error) => return Err(error).context("read"),
        }
    }
    Ok(true)
}

/// The bytes of a slice of f64, in memory order (little-endian here), to write them
/// through a pipe without a copy into another buffer.
pub fn f64_bytes(values: &[f64]) -> &[u8] {
    // SAFETY: f64 has no padding and every byte of it may be read; u8 has alignment 1;
    // the length covers exactly the slice.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}
