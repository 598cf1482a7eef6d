//! stuck — when end-of-file never reaches the last stage: who still holds a write end
//! of the pipe it waits on, from /proc/<pid>/fd and fdinfo.

use crate::observe;

/// "stage 2 (pid 4243) still waits for end-of-file on pipe:[123]; pid 4240 holds its
/// write end as fd 5": who keeps the pipe writable, from /proc/<pid>/fd and fdinfo.
pub fn stuck_message(program: i32, stages: &[(usize, i32)]) -> String {
    let Some((stage, stage_pid)) = stages.first() else {
        return "no end-of-file reached your stdout, yet no stage is running".to_string();
    };
    let Some(stdin) = observe::fds(*stage_pid).into_iter().find(|fd| fd.fd == 0) else {
        return format!("stage {stage} (pid {stage_pid}) never saw end-of-file");
    };
    let mut holders = Vec::new();
    for holder in
        std::iter::once(program).chain(observe::descendants(program).iter().map(|stat| stat.pid))
    {
        for fd in observe::fds(holder) {
            if fd.target == stdin.target && fd.writes() {
                let who = if holder == program {
                    format!("pid {holder} (your program)")
                } else {
                    format!("pid {holder}")
                };
                holders.push(format!(
                    "{who} as fd {} (fdinfo flags {:o})",
                    fd.fd, fd.flags
                ));
            }
        }
    }
    format!(
        "stage {stage} (pid {stage_pid}) still waits for end-of-file on its stdin, {}, 2 s after the input closed: its write end is still held by {}. Close every pipe end a process does not use, in the parent and in each child",
        stdin.target,
        if holders.is_empty() {
            "nobody visible".to_string()
        } else {
            holders.join(", ")
        }
    )
}
