//! Helpers shared by the end-to-end tests that drive the `pmsim` binary (each test crate uses
//! a part of them).
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (traces are named relative to it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the built `pmsim` in the repository root: exit code, stdout, stderr.
pub fn pmsim(args: &[&str]) -> (i32, String, String) {
    let o = pmsim_output(args);
    (code(&o), out(&o), err(&o))
}

/// Runs the built `pmsim` in the repository root; the whole [`Output`].
pub fn pmsim_output(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmsim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("pmsim runs")
}

/// The exit code of a finished `pmsim`.
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Its stdout.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its stderr.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `pmsim ARGS` in-process through `pmsim::run` (no process start; paths as given): exit
/// code, stdout, stderr.
pub fn pmsim_in_process(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once(OsString::from("pmsim")).chain(args.iter().map(OsString::from));
    let code = pmsim::run(
        argv,
        &mut pmsim::Io {
            out: &mut out,
            err: &mut err,
            progress: false,
        },
    );
    (
        i32::from(code),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// A scratch trace file `name` with `text`, under the target directory's `dir`.
pub fn scratch_in(dir: &str, name: &str, text: &str) -> String {
    let p = scratch_path(dir, name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A path `name` under the target directory's `dir`, with no file there (for outputs).
pub fn scratch_path(dir: &str, name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p.display().to_string()
}

/// The replay command a human report prints (its `replay:` line), split into arguments as a
/// POSIX shell would (pmsim quotes with single quotes only); the first is `pmsim`.
pub fn printed_replay(report: &str) -> Vec<String> {
    let line = report
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("replay:"))
        .unwrap_or_else(|| panic!("no `replay:` line in:\n{report}"));
    shell_words(line)
}

/// `line` split into words: blanks separate words outside single quotes.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, in_word) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                }
                in_word = false;
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if in_word {
        words.push(cur);
    }
    words
}

/// Runs a printed `pmsim ...` command exactly as printed (in the repository root).
pub fn run_printed(words: &[String]) -> (i32, String, String) {
    assert_eq!(
        words.first().map(String::as_str),
        Some("pmsim"),
        "{words:?}"
    );
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    pmsim(&args)
}

/// The violation kind of a human report's first `VIOLATION KIND ...` line (crashcheck
/// prints `VIOLATION KIND: ...`).
pub fn violation_kind(report: &str) -> Option<String> {
    report.lines().find_map(|l| {
        l.strip_prefix("VIOLATION ")
            .and_then(|r| r.split_whitespace().next())
            .map(|k| k.trim_end_matches(':').to_string())
    })
}
