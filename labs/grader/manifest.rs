//! manifest — labs/labs.toml: the labs, their checks and points, time limits, mutants.
//!
//! The manifest is compiled into the grader (`include_str!`), so a built `grade` always
//! agrees with the checks it was built with.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Deserialize;

pub const TEXT: &str = include_str!("../labs.toml");

#[derive(Deserialize)]
pub struct Manifest {
    /// Keyed by lab name, in file order.
    pub lab: BTreeMap<String, Lab>,
}

#[derive(Deserialize)]
pub struct Lab {
    pub chapter: String,
    /// The whole run, in seconds; the program's process group is killed after it.
    pub time_limit: f64,
    /// More processes than this in the program's group is a fork bomb: the group is killed.
    pub max_processes: usize,
    pub hint: String,
    pub check: Vec<Check>,
    #[serde(default)]
    pub mutant: Vec<Mutant>,
}

#[derive(Deserialize)]
pub struct Check {
    pub id: String,
    pub points: u32,
    /// What the check proves, in one line: the report's test name.
    pub name: String,
}

#[derive(Deserialize)]
pub struct Mutant {
    /// The bin is `<lab>-mutant-<name>`.
    pub name: String,
    /// The classic mistake it makes.
    pub mistake: String,
    /// Exactly the checks it must lose.
    pub loses: Vec<String>,
}

pub fn load() -> anyhow::Result<Manifest> {
    let manifest: Manifest = toml::from_str(TEXT).context("labs/labs.toml")?;
    for (name, lab) in &manifest.lab {
        for mutant in &lab.mutant {
            for lost in &mutant.loses {
                if !lab.check.iter().any(|check| &check.id == lost) {
                    bail!(
                        "labs.toml: mutant {name}/{} loses unknown check {lost}",
                        mutant.name
                    );
                }
            }
        }
    }
    Ok(manifest)
}

impl Lab {
    pub fn max_score(&self) -> u32 {
        self.check.iter().map(|check| check.points).sum()
    }
}
