//! formats — the report as course tools read it: Gradescope, GitHub Classroom, JUnit, CSV.
//!
//! Gradescope reads results.json (`score`, `tests[]` with `score`, `max_score`, `name`,
//! `output`, `visibility`). GitHub Classroom's grader steps print a base64 JSON `result`
//! (`status`, `max_score`, `tests[]` with `name`, `status`, `score`, `message`); its
//! reporter sums the scores.

use serde_json::json;

use crate::report::Report;

pub fn gradescope(report: &Report) -> String {
    let tests: Vec<_> = report
        .lines
        .iter()
        .map(|line| {
            json!({
                "name": format!("{}: {}", line.id, line.name), "score": line.points,
                "max_score": line.max_points, "output": line.message, "visibility": "visible",
            })
        })
        .collect();
    let results =
        json!({ "score": report.score(), "execution_time": report.seconds, "tests": tests });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&results).expect("a JSON value serializes")
    )
}

pub fn classroom(report: &Report) -> String {
    let tests: Vec<_> = report
        .lines
        .iter()
        .map(|line| {
            json!({
                "name": line.id, "status": if line.passed { "pass" } else { "fail" },
                "score": line.points, "max_score": line.max_points, "message": line.message,
                "test_code": format!("grade {} --seed {}", report.lab, report.seed),
                "line_no": 0, "filename": report.submission, "execution_time": 0,
            })
        })
        .collect();
    let result = json!({
        "version": 1, "status": if report.full() { "pass" } else { "fail" },
        "max_score": report.max_score(), "tests": tests,
    });
    format!("{}\n", base64(result.to_string().as_bytes()))
}

pub fn junit(report: &Report) -> String {
    let failures = report.lines.iter().filter(|line| !line.passed).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        xml(&report.lab),
        report.lines.len(),
        report.seconds
    );
    for line in &report.lines {
        out += &format!(
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml(&report.lab),
            xml(&line.id)
        );
        if line.passed {
            out += "</testcase>\n";
        } else {
            out += &format!("<failure message=\"{}\"/></testcase>\n", xml(&line.message));
        }
    }
    out + "  </testsuite>\n</testsuites>\n"
}

/// The header of the CSV: one column per check's points.
pub fn csv_header(report: &Report) -> String {
    let checks: Vec<&str> = report.lines.iter().map(|line| line.id.as_str()).collect();
    format!("submission,seed,score,max_score,{}\n", checks.join(","))
}

pub fn csv_row(report: &Report) -> String {
    let points: Vec<String> = report
        .lines
        .iter()
        .map(|line| line.points.to_string())
        .collect();
    let name = report.submission.replace('"', "\"\"");
    format!(
        "\"{name}\",{},{},{},{}\n",
        report.seed,
        report.score(),
        report.max_score(),
        points.join(",")
    )
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding (RFC 4648), for Classroom's `result`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, &byte)| {
            word | u32::from(byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(word >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
