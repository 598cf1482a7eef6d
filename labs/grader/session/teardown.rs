//! teardown — the session's promise that nothing outlives a run: when it is dropped,
//! every descendant is killed and reaped, its IPC objects unlinked, its scratch
//! directory removed — whether the run was graded, failed or panicked.

use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Session;

impl Drop for Session {
    fn drop(&mut self) {
        // Kill and reap until the grader has no child left: a process that forks while
        // it is being killed leaves a new child, which the next round finds.
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            self.kill_everything();
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Err(_) => break, // ECHILD: nothing left
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
                Ok(_) => {}
            }
            if Instant::now() > until {
                eprintln!("grade: some processes would not die; they stay children of the grader");
                break;
            }
        }
        for name in &self.ipc {
            let Ok(c_name) = std::ffi::CString::new(name.as_str()) else {
                continue;
            };
            // SAFETY: both calls take a NUL-terminated name; a missing object is ENOENT.
            unsafe {
                libc::shm_unlink(c_name.as_ptr());
                libc::mq_unlink(c_name.as_ptr());
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
