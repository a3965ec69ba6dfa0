//! Where an export goes, written so that no input and no unrelated file can be harmed.
//!
//! An export's output directory is checked before anything is written: it must not be, lie
//! inside, or contain any input (the base, an adapter folder, or a file either of them links
//! to); it must not be a symbolic link or a file; and it must be absent or empty unless the
//! caller asked to replace it (`force`). The files are then written into a fresh directory
//! beside it (unique name, created exclusively, files created with `O_EXCL` so no symlink is
//! ever followed) and moved into place by one `rename`. So a reader sees the old directory or
//! the whole new one, never a mix; two exports into one place leave one complete output (the
//! loser fails, or with `force` is replaced whole by the other); and a failure at any point
//! (disk full, a bad tensor, a panic) removes the fresh directory.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A checked output directory: nothing has been written yet.
#[derive(Debug)]
pub struct Target {
    /// As the caller named it (for messages and the report).
    given: PathBuf,
    /// Absolute, with every existing part resolved; the last part is never a symlink.
    resolved: PathBuf,
    force: bool,
}

/// A fresh directory beside the target that receives the files; removed unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: Target,
    committed: bool,
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
            let mut r = fs::canonicalize(cur).map_err(|e| Error::io(cur, e))?;
            for part in tail.iter().rev() {
                r.push(part);
            }
            return Ok(r);
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
                let mut entries = fs::read_dir(out).map_err(|e| Error::io(out, e))?;
                if entries.next().is_some() && !force {
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
        let parent = self.parent();
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        for _ in 0..64 {
            let dir = parent.join(self.sibling("partial"));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dir,
                        target: self,
                        committed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        Err(refuse(format!(
            "cannot create a fresh staging directory in {}",
            parent.display()
        )))
    }

    fn parent(&self) -> PathBuf {
        self.resolved
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `.NAME.graftlm-KIND-PID-N`: hidden, unique to this process and call.
    fn sibling(&self, kind: &str) -> OsString {
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

impl Staging {
    /// Creates `name` in the staging directory; never opens an existing file or follows a link.
    pub fn create(&self, name: &str) -> Result<(File, PathBuf)> {
        let p = self.dir.join(name);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        Ok((f, p))
    }

    /// Writes `bytes` as `name` and syncs it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let (mut f, p) = self.create(name)?;
        f.write_all(bytes).map_err(|e| Error::io(&p, e))?;
        f.sync_all().map_err(|e| Error::io(&p, e))
    }

    /// Copies the regular file `src` in as `name`.
    pub fn copy_in(&self, src: &Path, name: &str) -> Result<()> {
        let mut from = crate::file::open_regular(src)?;
        let (mut to, p) = self.create(name)?;
        io::copy(&mut from, &mut to).map_err(|e| Error::io(&p, e))?;
        to.sync_all().map_err(|e| Error::io(&p, e))
    }

    /// Moves the staging directory into place as one rename. Without `force`, an output that
    /// another process filled meanwhile wins and this one is discarded.
    pub fn commit(mut self) -> Result<PathBuf> {
        let out = self.target.resolved.clone();
        let parent = self.target.parent();
        // The files are synced; the directory entries too, before the rename publishes them.
        sync_dir(&self.dir);
        let mut set_aside: Vec<PathBuf> = Vec::new();
        let mut result = Err(refuse(format!(
            "{}: another export kept replacing it; this one was discarded",
            self.target.given.display()
        )));
        for _ in 0..16 {
            match fs::rename(&self.dir, &out) {
                Ok(()) => {
                    self.committed = true;
                    result = Ok(self.target.given.clone());
                    break;
                }
                Err(e) if fs::symlink_metadata(&out).is_err() => {
                    let retry = e.kind() == io::ErrorKind::Interrupted;
                    result = Err(Error::io(&out, e));
                    if retry {
                        continue;
                    }
                    break;
                }
                Err(_) => {}
            }
            // Something is there: an empty directory may go (portable "rename over empty");
            // anything else only with force, moved aside whole and removed after.
            if fs::remove_dir(&out).is_ok() {
                continue;
            }
            if !self.target.force {
                result = Err(refuse(format!(
                    "{} was filled by another process while this export ran; \
                     that output was kept and this one discarded",
                    self.target.given.display()
                )));
                break;
            }
            let aside = parent.join(self.target.sibling("old"));
            if fs::rename(&out, &aside).is_ok() {
                set_aside.push(aside);
            }
        }
        for old in set_aside {
            let _ = fs::remove_dir_all(&old);
        }
        sync_dir(&parent);
        result
    }
}

/// Best effort: not every file system can sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // `remove_dir_all` does not follow symlinks; the directory is ours alone.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(d: &Path) -> Vec<(PathBuf, &'static str)> {
        inputs_of([(d, "base checkpoint")])
    }

    #[test]
    fn refuses_inputs_their_insides_and_their_ancestors() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        fs::create_dir_all(base.join("sub")).unwrap();
        fs::write(base.join("config.json"), "{}").unwrap();
        let ins = inputs(&base);
        for out in [
            base.clone(),
            base.join("sub"),
            base.join("new/deeper"),
            t.path().into(),
        ] {
            let e = Target::check(&out, &ins, true).unwrap_err().to_string();
            assert!(
                e.contains("refusing to write over an input"),
                "{out:?}: {e}"
            );
        }
        #[cfg(unix)]
        {
            let link = t.path().join("link");
            std::os::unix::fs::symlink(&base, &link).unwrap();
            let e = Target::check(&link, &ins, true).unwrap_err().to_string();
            assert!(e.contains("refusing"), "{e}");
        }
        assert!(fs::read_to_string(base.join("config.json")).unwrap() == "{}");
    }

    #[test]
    fn non_empty_needs_force_and_force_replaces_whole() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old.bin"), "old").unwrap();
        let e = Target::check(&out, &[], false).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let s = Target::check(&out, &[], true).unwrap().stage().unwrap();
        s.write("new.bin", b"new").unwrap();
        s.commit().unwrap();
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("new.bin")]);
        let left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![OsString::from("out")],
            "nothing else left beside it"
        );
    }

    #[test]
    fn an_empty_directory_is_filled_and_a_failure_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        {
            let s = Target::check(&out, &[], false).unwrap().stage().unwrap();
            s.write("a", b"1").unwrap();
            // Dropped without commit: as after any error.
        }
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        let s = Target::check(&out, &[], false).unwrap().stage().unwrap();
        s.write("a", b"1").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(out.join("a")).unwrap(), b"1");
    }

    #[test]
    fn a_second_writer_loses_cleanly_without_force() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let a = Target::check(&out, &[], false).unwrap().stage().unwrap();
        let b = Target::check(&out, &[], false).unwrap().stage().unwrap();
        a.write("who", b"a").unwrap();
        b.write("who", b"b").unwrap();
        a.commit().unwrap();
        let e = b.commit().unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        assert_eq!(fs::read(out.join("who")).unwrap(), b"a");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_files_as_out_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = Target::check(&link, &[], true).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        let e = Target::check(&file, &[], true).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
