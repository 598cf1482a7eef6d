//! grade — grades a proclab lab by watching what the kernel shows, never the program's
//! stdout.
//!
//! Run:  cargo run -p labs --bin grade -- reaper --submission my_reaper.rs
//!       grade reaper --program target/debug/reaper-solution --seed 3 --json
//!       grade hint reaper;  grade reaper --seed 3 --answers
//! Book: book/src/labs/instructors.md

mod checks;
mod cli;
mod formats;
mod manifest;
mod observe;
mod report;
mod seed;
mod session;
mod submission;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};

use cli::{Args, Format};
use manifest::{Lab, Manifest};
use report::Report;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("grade: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let manifest = manifest::load()?;
    let (name, hint) = match args.lab.as_slice() {
        [list] if list == "list" => {
            for (name, lab) in &manifest.lab {
                println!(
                    "{name:10} {} points, {} checks  ({})",
                    lab.max_score(),
                    lab.check.len(),
                    lab.chapter
                );
                for mutant in &lab.mutant {
                    println!("    mutant {}: {}", mutant.name, mutant.mistake);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        [hint, name] if hint == "hint" => (name, true),
        [name] => (name, false),
        _ => usage("give one lab, or `hint <lab>`"),
    };
    let Some(lab) = manifest.lab.get(name) else {
        let known: Vec<&str> = manifest.lab.keys().map(String::as_str).collect();
        usage(&format!(
            "no lab named {name}; the labs are {}",
            known.join(", ")
        ));
    };
    if hint {
        println!("{}", lab.hint.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let seed = args.seed();
    if args.answers {
        print!("{}", checks::answers(name, seed)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.dir {
        return grade_dir(args, &manifest, name, dir, seed);
    }
    let report = match &args.program {
        Some(program) => grade(name, lab, program, seed, program.display().to_string())?,
        None => {
            let source = args.submission.clone().unwrap_or_else(|| {
                submission::workspace()
                    .join("labs")
                    .join(name)
                    .join("starter.rs")
            });
            grade_source(name, lab, &source, seed)?
        }
    };
    print!("{}", render(args.format(), &report));
    Ok(if report.full() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn usage(message: &str) -> ! {
    Args::command()
        .error(ErrorKind::InvalidValue, message)
        .exit()
}

/// One run of the lab against a built program, in a fresh session.
fn grade(
    name: &str,
    lab: &Lab,
    program: &Path,
    seed: u64,
    label: String,
) -> anyhow::Result<Report> {
    anyhow::ensure!(program.exists(), "no program at {}", program.display());
    let mut session = session::Session::new(lab.time_limit, lab.max_processes)?;
    let findings = checks::grade(name, &mut session, program, seed)?;
    let seconds = session.elapsed().as_secs_f64();
    let cut = session.cut.clone();
    drop(session); // kill, reap, unlink, remove: before the report is printed
    Ok(Report::new(
        name,
        lab,
        seed,
        label,
        &findings,
        cut.as_ref(),
        seconds,
    ))
}

fn grade_source(name: &str, lab: &Lab, source: &Path, seed: u64) -> anyhow::Result<Report> {
    let label = source.display().to_string();
    match submission::build(source)? {
        Ok(program) => grade(name, lab, &program, seed, label),
        Err(why) => Ok(Report::failed(name, lab, seed, label, &why)),
    }
}

fn grade_dir(
    args: &Args,
    manifest: &Manifest,
    name: &str,
    dir: &Path,
    seed: u64,
) -> anyhow::Result<ExitCode> {
    let lab = &manifest.lab[name];
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    sources.sort();
    let mut all_full = true;
    for (index, source) in sources.iter().enumerate() {
        // Each student's own seed when --student is not given: the file's stem is the id.
        let seed = match (&args.seed, &args.student) {
            (None, None) => seed::student_seed(
                &args.salt,
                &source.file_stem().unwrap_or_default().to_string_lossy(),
            ),
            _ => seed,
        };
        let report = grade_source(name, lab, source, seed)?;
        all_full &= report.full();
        match args.format() {
            Format::Csv if index == 0 => print!(
                "{}{}",
                formats::csv_header(&report),
                formats::csv_row(&report)
            ),
            Format::Csv => print!("{}", formats::csv_row(&report)),
            format => print!("{}", render(format, &report)),
        }
    }
    Ok(if all_full {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(format: Format, report: &Report) -> String {
    match format {
        Format::Text => report.text(),
        Format::Json => report.json_lines(),
        Format::Gradescope => formats::gradescope(report),
        Format::Classroom => formats::classroom(report),
        Format::Junit => formats::junit(report),
        Format::Csv => formats::csv_header(report) + &formats::csv_row(report),
    }
}
