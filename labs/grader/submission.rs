//! submission — builds a student's file into a program, offline, against pinned crates.
//!
//! The file becomes src/main.rs of a generated package under target/labs/ that depends
//! on exactly the libc and nix the labs use; the workspace's Cargo.lock is copied in and
//! every submission shares one target directory, so the crates build once and no build
//! ever needs the network.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The workspace root, known when the grader was built.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("labs/ is inside the workspace")
        .to_path_buf()
}

const MANIFEST: &str = r#"[package]
name = "submission"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
libc = "=0.2.191"
nix = { version = "=0.31.3", default-features = false, features = ["fs", "mman", "mqueue", "poll", "process", "resource", "signal", "term", "time"] }

# Not a member of proclab's workspace.
[workspace]
"#;

/// Builds `source` and returns the program's path, or the compiler's complaint.
pub fn build(source: &Path) -> anyhow::Result<Result<PathBuf, String>> {
    let text =
        std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let labs = workspace().join("target").join("labs");
    let name = source
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("submission");
    let package = labs.join("build").join(format!(
        "{name}-{:x}",
        crate::seed::fnv1a(source.to_string_lossy().as_bytes())
    ));
    std::fs::create_dir_all(package.join("src"))
        .with_context(|| format!("mkdir {}", package.display()))?;
    std::fs::write(package.join("Cargo.toml"), MANIFEST)?;
    std::fs::copy(workspace().join("Cargo.lock"), package.join("Cargo.lock"))
        .context("copying Cargo.lock")?;
    std::fs::write(package.join("src/main.rs"), text)?;
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(package.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", labs.join("target"))
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        let errors = String::from_utf8_lossy(&output.stderr);
        let first: Vec<&str> = errors.lines().take(12).collect();
        return Ok(Err(format!(
            "{} did not build: {}",
            source.display(),
            first.join(" / ")
        )));
    }
    // One target dir for all: copy the binary out so the next build does not replace it.
    let program = package.join(name);
    std::fs::copy(labs.join("target/debug/submission"), &program)
        .context("copying the built program")?;
    Ok(Ok(program))
}
