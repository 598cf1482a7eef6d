//! lab-child — the processes the grader asks a lab's program to start.
//!
//! Small and std-only, so exec is cheap and /proc shows exactly what the grader chose:
//!   lab-child exit CODE [--after MS] [--wait FIFO] [--id N]
//!       exit with CODE after MS milliseconds, or when FIFO reaches end-of-file (every
//!       child of a burst waits on one FIFO; the grader closes it and they exit at once)
//!   lab-child hold [--id N]     sleep until a signal ends it (the grader sends it)
//!   lab-child read [--id N]     read stdin until end-of-file (a background job that reads
//!                               its terminal is stopped by SIGTTIN: the shell lab)
//!   lab-child add K [--stage N] copy stdin to stdout, adding K to every byte (a stage)
//! `--id N` and `--stage N` only label the process for the grader, which finds it by its command line.

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|at| args.get(at + 1))
    };
    match args.first().map(String::as_str) {
        Some("exit") => {
            let code: i32 = args.get(1).and_then(|code| code.parse().ok()).unwrap_or(0);
            if let Some(after) = option("--after").and_then(|ms| ms.parse().ok()) {
                std::thread::sleep(Duration::from_millis(after));
            }
            if let Some(fifo) = option("--wait") {
                wait_for_eof(fifo);
            }
            std::process::exit(code);
        }
        Some("hold") => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Some("read") => {
            let mut buffer = [0u8; 256];
            while let Ok(1..) = std::io::stdin().read(&mut buffer) {}
        }
        Some("add") => {
            let add: u8 = args.get(1).and_then(|add| add.parse().ok()).unwrap_or(0);
            let mut buffer = [0u8; 8192];
            let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
            loop {
                match input.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(count) => {
                        let shifted: Vec<u8> = buffer[..count]
                            .iter()
                            .map(|byte| byte.wrapping_add(add))
                            .collect();
                        if output
                            .write_all(&shifted)
                            .and_then(|()| output.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }
        _ => {
            eprintln!(
                "usage: lab-child exit CODE [--after MS] [--wait FIFO] | hold | read | add K"
            );
            std::process::exit(2);
        }
    }
}

/// Opens the FIFO without blocking (a FIFO with no writer left reads as end-of-file at
/// once, so a child started after the burst exits at once too), then blocks in read
/// until the grader closes its end.
fn wait_for_eof(fifo: &str) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
    else {
        return;
    };
    // SAFETY: F_SETFL on a descriptor this process owns; clears O_NONBLOCK so read sleeps.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    let mut byte = [0u8; 1];
    while let Ok(1..) = file.read(&mut byte) {}
}
