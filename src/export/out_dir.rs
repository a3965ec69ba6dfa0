//! Where an export goes, written so that no input and no unrelated file can be harmed.
//!
//! An export's output directory is checked before anything is written: it must not be, lie
//! inside, or contain any input (the base, an adapter folder, or a file either of them links
//! to); it must not be a symbolic link or a file; and it must be absent or empty unless the
//! caller asked to replace it (`force`). The files are then written into a fresh directory
//! beside it (unique name, created exclusively, files created with `O_EXCL` so no symlink is
//! ever followed) and moved into place by one `rename` — with `force` over an existing output,
//! one atomic exchange on Linux. So a reader sees the old directory or the whole new one, never
//! a mix; of two exports into one place without `force` one complete output wins and the other
//! fails; and a failure at any point (disk full, a bad tensor, a panic) removes the fresh
//! directory.
//!
//! An output that cannot be swapped as a whole — a mount point (a container volume), or an
//! existing directory whose parent graftlm may not write — is filled from a staging directory
//! inside it instead, under an exclusive lock, file by file ([`staging`]).

mod staging;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
pub use staging::Staging;

/// A checked output directory: nothing has been written yet.
#[derive(Debug)]
pub struct Target {
    /// As the caller named it (for messages and the report).
    given: PathBuf,
    /// Absolute, with every existing part resolved; the last part is never a symlink.
    resolved: PathBuf,
    force: bool,
}

fn refuse(msg: impl std::fmt::Display) -> Error {
    Error::invalid("out", msg)
}

/// `p` made absolute, with its longest existing prefix resolved through symlinks and the rest
/// appended as plain names.
fn resolve(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p)
    };
    let mut tail: Vec<OsString> = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if fs::symlink_metadata(cur).is_ok() {
            match fs::canonicalize(cur) {
                Ok(mut r) => {
                    for part in tail.iter().rev() {
                        r.push(part);
                    }
                    return Ok(r);
                }
                // Removed in between (another export swapping it): resolve it as absent.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(cur, e)),
            }
        }
        match (cur.parent(), cur.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            (_, Some(Component::CurDir)) => cur = cur.parent().unwrap_or(cur),
            _ => {
                return Err(refuse(format!(
                    "{}: cannot be resolved (`..` below a directory that does not exist?)",
                    p.display()
                )))
            }
        }
    }
}

/// The inputs an export reads: each folder, and everything directly inside it resolved (a Hugging
/// Face cache links its weights into a `blobs/` folder elsewhere).
pub fn inputs_of<'a>(
    dirs: impl IntoIterator<Item = (&'a Path, &'static str)>,
) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    for (d, what) in dirs {
        if let Ok(c) = fs::canonicalize(d) {
            out.push((c, what));
        }
        if let Ok(entries) = fs::read_dir(d) {
            for e in entries.flatten() {
                if let Ok(c) = fs::canonicalize(e.path()) {
                    out.push((c, what));
                }
            }
        }
    }
    out
}

impl Target {
    /// Checks `out` against `inputs` (canonical paths with what they are) without writing.
    pub fn check(out: &Path, inputs: &[(PathBuf, &'static str)], force: bool) -> Result<Self> {
        if out.as_os_str().is_empty() {
            return Err(refuse("is empty"));
        }
        let resolved = resolve(out)?;
        for (input, what) in inputs {
            if resolved == *input || resolved.starts_with(input) {
                return Err(refuse(format!(
                    "{} is (or is inside) the {what} {}: refusing to write over an input",
                    out.display(),
                    input.display()
                )));
            }
            if input.starts_with(&resolved) {
                return Err(refuse(format!(
                    "{} holds the {what} {}: refusing to write over an input",
                    out.display(),
                    input.display()
                )));
            }
        }
        match fs::symlink_metadata(out) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(out, e)),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(format!(
                    "{} is a symbolic link; give the directory itself",
                    out.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(refuse(format!(
                    "{} exists and is not a directory",
                    out.display()
                )))
            }
            Ok(_) => {
                let full = match fs::read_dir(out) {
                    Ok(mut entries) => entries.next().is_some(),
                    // Removed in between: absent.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(Error::io(out, e)),
                };
                if full && !force {
                    return Err(refuse(format!(
                        "{} already exists and is not empty; nothing was written \
                         (force — `graftlm merge --force` — replaces it whole)",
                        out.display()
                    )));
                }
            }
        }
        let resolved = match resolved.parent() {
            Some(_) if resolved.file_name().is_some() => resolved,
            _ => return Err(refuse(format!("{} has no parent folder", out.display()))),
        };
        Ok(Self {
            given: out.to_path_buf(),
            resolved,
            force,
        })
    }

    /// Creates the staging directory (and the target's missing parents).
    pub fn stage(self) -> Result<Staging> {
        Staging::new(self)
    }

    pub(super) fn parent(&self) -> PathBuf {
        self.resolved
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `.NAME.graftlm-KIND-PID-N`: hidden, unique to this process and call.
    pub(super) fn sibling(&self, kind: &str) -> OsString {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut s = OsString::from(".");
        s.push(self.resolved.file_name().unwrap_or_default());
        s.push(format!(
            ".graftlm-{kind}-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        s
    }
}
