//! term — the shell lab's terminal: a pseudo-terminal the grader opens. The shell runs on
//! its slave side (fd 0, 1, 2; a session leader with it as its controlling terminal);
//! the grader sits on the master side like a user at a keyboard: it types lines and
//! control keys, and reads what the shell prints only to count the prompts.
//!
//! The keys are the terminal's own (termios defaults): Ctrl-C (0x03) makes the kernel's
//! line discipline send SIGINT to the terminal's foreground process group, Ctrl-Z (0x1a)
//! SIGTSTP, and Ctrl-D (0x04) at the start of a line makes the shell's read return 0.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

use crate::session::Session;

/// The prompt the contract fixes: the shell prints it when it is ready for a line.
pub const PROMPT: &str = "tsh> ";

pub const CTRL_C: u8 = 0x03;
pub const CTRL_Z: u8 = 0x1a;
pub const CTRL_D: u8 = 0x04;

pub struct Term {
    master: OwnedFd,
    output: Vec<u8>,
    /// How many prompts the shell has printed so far.
    pub prompts: usize,
}

impl Term {
    /// Opens the pseudo-terminal and starts `program` on it; returns the terminal and the
    /// shell's pid (also its process group and session).
    pub fn start(session: &mut Session, program: &Path) -> anyhow::Result<(Term, i32)> {
        let pty = nix::pty::openpty(None, None)?;
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let mut command = Command::new(program);
        command
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: between fork and exec the child only calls signal(2), which is
        // async-signal-safe: the shell starts with the default dispositions a terminal
        // emulator gives it, whatever the grader inherited (a `&` job ignores SIGINT).
        unsafe {
            command.pre_exec(|| {
                for signal in [
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGTSTP,
                    libc::SIGTTIN,
                    libc::SIGTTOU,
                    libc::SIGCHLD,
                    libc::SIGHUP,
                ] {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let child = session.spawn_on_terminal(&mut command, 0)?;
        drop(command); // the grader keeps no slave descriptor: only the shell's side has one
        let term = Term {
            master: pty.master,
            output: Vec::new(),
            prompts: 0,
        };
        Ok((term, child.id() as i32))
    }

    /// Reads whatever the shell printed (never blocks) and counts the prompts.
    pub fn pump(&mut self) {
        let mut buffer = [0u8; 4096];
        let before = self.output.len();
        // EAGAIN: nothing more for now; EIO: no process holds the slave any more.
        while let Ok(count @ 1..) = nix::unistd::read(&self.master, &mut buffer) {
            self.output.extend_from_slice(&buffer[..count]);
        }
        if self.output.len() > before {
            let prompt = PROMPT.as_bytes();
            self.prompts = self
                .output
                .windows(prompt.len())
                .filter(|window| *window == prompt)
                .count();
        }
    }

    /// Types `line` and Enter.
    pub fn line(&mut self, line: &str) {
        self.write(format!("{line}\n").as_bytes());
    }

    /// Types one control key (Ctrl-C, Ctrl-Z, Ctrl-D).
    pub fn key(&mut self, key: u8) {
        self.write(&[key]);
    }

    fn write(&mut self, bytes: &[u8]) {
        // A failed write (the shell gone) shows up as a missing prompt.
        let _ = nix::unistd::write(&self.master, bytes);
    }

    /// The last lines the shell printed (for a message): at most `count` characters,
    /// the helper's path shortened to `lab-child`.
    pub fn tail(&self, count: usize, helper: &str) -> String {
        let text = String::from_utf8_lossy(&self.output).replace(helper, "lab-child");
        let start = text.len().saturating_sub(count);
        let start = (start..text.len())
            .find(|&at| text.is_char_boundary(at))
            .unwrap_or(text.len());
        text[start..].replace('\r', "").replace('\n', "⏎")
    }
}
