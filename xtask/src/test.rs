//! `cargo xtask test`: what CI runs (`.ci/run`). Setup, then `cargo fmt --all --check`,
//! `cargo clippy --workspace --all-targets -- -D warnings`, `cargo build`, and
//! `cargo test --workspace` (the integration tests need root: namespaces, qemu taps).
//! Prints a summary: time per step, and tests passed / failed / ignored.
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{setup, util};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the fmt and clippy steps (for a quick local re-run).
    #[arg(long)]
    no_lint: bool,
    /// Passed to `cargo test --workspace` after `--` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    test_args: Vec<String>,
}

/// Totals over every `test result:` line of a cargo test run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub binaries: u64,
}

impl Counts {
    /// Adds a libtest summary line
    /// (`test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`).
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = |i: usize| {
                words
                    .get(i)
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // The first part is "ok. 5 passed" / "FAILED. 3 passed".
            let (num, what) = if words.len() == 3 {
                (n(1), words[2])
            } else {
                (n(0), *words.get(1).unwrap_or(&""))
            };
            match what {
                "passed" => self.passed += num,
                "failed" => self.failed += num,
                "ignored" => self.ignored += num,
                _ => {}
            }
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut steps: Vec<(&str, Duration)> = vec![];
    let ts = Instant::now();
    setup::run()?;
    steps.push(("setup", ts.elapsed()));
    if !util::is_root() {
        eprintln!("warning: not root: the integration tests that need namespaces will skip");
    }
    if !args.no_lint {
        steps.push((
            "fmt",
            util::run_step(
                "cargo fmt --all --check",
                util::cargo().args(["fmt", "--all", "--check"]),
            )?,
        ));
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        steps.push((
            "clippy",
            util::run_step("cargo clippy", util::cargo().args(clippy))?,
        ));
    }
    steps.push((
        "build",
        util::run_step("cargo build", util::cargo().arg("build"))?,
    ));
    let ts = Instant::now();
    let (counts, ok) = cargo_test(&args.test_args)?;
    steps.push(("test", ts.elapsed()));

    eprintln!("\n=== cargo xtask test summary");
    for (name, d) in &steps {
        eprintln!("  {name:<8} {:>8}", util::secs(*d));
    }
    eprintln!(
        "  tests: {} passed, {} failed, {} ignored ({} test binaries)",
        counts.passed, counts.failed, counts.ignored, counts.binaries
    );
    eprintln!("  total: {}", util::secs(t0.elapsed()));
    if !ok || counts.failed > 0 {
        bail!("cargo test --workspace failed");
    }
    Ok(())
}

/// Runs `cargo test --workspace`, echoing its output and counting the results.
fn cargo_test(extra: &[String]) -> anyhow::Result<(Counts, bool)> {
    let mut cmd = util::cargo();
    cmd.args(["test", "--workspace"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((counts, status.success()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summaries() {
        let mut c = Counts::default();
        for l in [
            "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "running 3 tests",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 9.2s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            c.add_line(l);
        }
        assert_eq!(
            c,
            Counts {
                passed: 7,
                failed: 1,
                ignored: 1,
                binaries: 3
            }
        );
    }
}
