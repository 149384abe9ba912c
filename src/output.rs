//! Files pmsim writes (`--events`, schedule files) and reads (traces, `--schedule-file`).
//!
//! pmsim runs as root on test machines, so an output path is trusted only as far as it is
//! plainly a file: a path that is absent (in an existing directory) or a regular file is
//! written through a temporary file in the same directory and a rename, so a reader never sees
//! a partial file; anything else (a symbolic link, a directory, a device such as `/dev/full`
//! or `/dev/null`, a FIFO, a socket) is refused before anything runs and again just before the
//! write, and is never followed, truncated or replaced.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The directory a file path lives in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether pmsim may create or replace `path`: `Ok` when it is absent in an existing directory
/// or is a regular file (not a link to one); otherwise the reason, for the user.
pub fn check_target(path: &Path) -> Result<(), String> {
    if path.file_name().is_none() {
        return Err("expected a file path (it names no file)".into());
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            if t.is_symlink() {
                Err(
                    "is a symbolic link; pmsim neither writes through nor replaces links \
                     (give the link's target instead)"
                        .into(),
                )
            } else if t.is_dir() {
                Err("is a directory; expected a file path".into())
            } else if !t.is_file() {
                Err(
                    "is not a regular file (a device, FIFO or socket); pmsim only creates or \
                     replaces regular files"
                        .into(),
                )
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            if dir.is_dir() {
                Ok(())
            } else {
                Err(format!("the directory {} does not exist", dir.display()))
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename, after
/// [`check_target`]. The temporary file is created exclusively (a planted link at its name is
/// not followed); an error leaves no file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    check_target(path)?;
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or("expected a file path")?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{name}.pmsim-tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| e.to_string())
}

/// Read at most `limit` bytes of `path`; a longer input (such as `/dev/zero`) is an error
/// rather than a read without bound.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("is a directory".into());
    }
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the input is larger than pmsim's limit of {} MiB",
            limit >> 20
        ));
    }
    Ok(bytes)
}
