//! Helpers shared by the end-to-end tests that drive the `pmsim` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (traces are named relative to it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the built `pmsim` in the repository root: exit code, stdout, stderr.
pub fn pmsim(args: &[&str]) -> (i32, String, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_pmsim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("pmsim runs");
    (
        o.status.code().expect("exited normally"),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A scratch trace file `name` with `text`, under the target directory's `dir`.
pub fn scratch_in(dir: &str, name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}
