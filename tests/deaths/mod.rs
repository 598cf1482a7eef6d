//! What the four sigchld programs' tests share (they share demos/lifecycle/deaths.rs):
//! the honest summary after Ctrl-C and the singular for one child.

use std::path::Path;

use crate::util::{Running, find, run_json, summary};

/// Issue 15: after Ctrl-C the summary blamed the strategy ("1 zombies left by pidfd"):
/// the children killed by the stop were counted as its zombies.
pub fn assert_an_interrupted_summary_blames_the_stop(program: &Path) {
    for _ in 0..3 {
        let mut demo = Running::start(program, &["--children", "5"]);
        demo.wait_for("forked");
        std::thread::sleep(std::time::Duration::from_millis(500));
        demo.interrupt();
        let (_, events) = demo.finish();
        let text = summary(&events)["text"].as_str().expect("text").to_owned();
        assert!(
            !text.contains("left by") && text.contains("before SIGINT"),
            "{text}"
        );
    }
}

/// Issue 15: "1 children", "1 zombies": the count decides the noun.
pub fn assert_one_child_is_one_child(demo: assert_cmd::Command, strategy: &str) {
    let events = run_json(demo, &["--children", "1"]);
    let forked = find(&events, "forked")["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(forked.starts_with("forked 1 child; it exits"), "{forked}");
    let text = summary(&events)["text"].as_str().expect("text").to_owned();
    let ending = format!(" 0 zombies left by {strategy}");
    assert!(
        text.starts_with("summary: 1 child, ") && text.ends_with(&ending),
        "{text}"
    );
}
