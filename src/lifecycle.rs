//! lifecycle — plumbing for the lifecycle programs' timelines: the lesson's calls stay in
//! the programs; this is only the wording of what they count, and waiting that is not
//! the lesson of the program that waits.

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use std::time::{Duration, Instant};

/// `count(1, "zombie", "zombies")` is "1 zombie", `count(3, …)` "3 zombies": a summary
/// never says "1 zombies".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Waits up to `limit` for the process of `pidfd` to end; false if it still runs, or if a
/// stop signal came first. A pidfd works for any process, not only a child of ours, and
/// becomes readable when the process ends (sigchld_pidfd shows the calls written out).
///
/// # References: pidfd_open(2), poll(2)
pub fn until_ended(pidfd: BorrowedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if crate::signals::wait_readable(Some(pidfd), left.min(Duration::from_secs(1))) {
            return true;
        }
        if left.is_zero() || crate::signals::stop_requested().is_some() {
            return false;
        }
    }
}

/// In a forked child: narrates `exec`, then `execvp(argv[0], argv)` with SIGPIPE back to
/// its default (and, with --json, the program's output on stderr). Returns only if the
/// exec failed, after narrating `exec_failed`: 127 if the program was not found, else
/// 126, as shells do. fork_exec_wait writes these calls out; child_status uses this.
///
/// # References: execvp(3), execve(2)
pub fn exec(argv: &[String]) -> anyhow::Result<i32> {
    use crate::narrate::{self, event};
    let text = format!("execvp({:?}, {argv:?})", argv[0]);
    event("exec").field("argv", argv).say(text);
    crate::child::default_sigpipe()?;
    let args: Vec<CString> = argv
        .iter()
        .map(|arg| CString::new(arg.as_str()))
        .collect::<Result<_, _>>()?;
    let json_safe = narrate::program_output_to_stderr()?; // --json: stdout stays JSON
    let error = nix::unistd::execvp(&args[0], &args).unwrap_err(); // returns only on failure
    drop(json_safe);
    let (name, why) = (&argv[0], error.desc());
    event("exec_failed")
        .field("errno", format!("{error:?}"))
        .say(format!("execvp({name:?}) failed: {error:?} ({why})"));
    Ok(if error == Errno::ENOENT { 127 } else { 126 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_zero_plural() {
        assert_eq!(super::count(1, "child", "children"), "1 child");
        assert_eq!(super::count(0, "zombie", "zombies"), "0 zombies");
        assert_eq!(super::count(3, "child", "children"), "3 children");
    }
}
