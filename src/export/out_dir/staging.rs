//! The staging directory an export writes into, and moving it into place.
//!
//! Normally the staging directory lies beside the target and is renamed onto it: one `rename`
//! when the target is absent or an empty directory, one `renameat2(RENAME_EXCHANGE)` to replace
//! a full one under `force` (elsewhere: the old one renamed aside, the new one in, the old one
//! renamed back if that fails). When the target is a mount point, or an existing directory whose
//! parent cannot be written, it cannot be renamed: then the staging directory lies inside it, an
//! exclusive lock on the target keeps two exports apart, and the files are renamed in one by one
//! at the end (each appears whole; the set does not appear as one unit).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{refuse, Target};
use crate::error::{Error, Result};

/// Where the staging directory lies.
#[derive(Debug)]
enum Place {
    /// Beside the target, renamed onto it at the end.
    Beside,
    /// Inside the target (held open and locked), its files moved in at the end.
    Inside(#[allow(dead_code)] File),
}

/// A fresh directory that receives an export's files; removed unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: Target,
    place: Place,
    committed: bool,
}

fn lost(t: &Target) -> Error {
    Error::Busy(format!(
        "{} was filled by another process while this export ran; that output was kept and \
         this one discarded",
        t.given.display()
    ))
}

impl Staging {
    /// Creates the staging directory for `target` (and the target's missing parents).
    pub(super) fn new(target: Target) -> Result<Self> {
        let parent = target.parent();
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        // The parent was resolved at check time; if it resolves elsewhere now (a link swapped in
        // meanwhile), the checks no longer hold.
        if fs::canonicalize(&parent).ok().as_deref() != Some(parent.as_path()) {
            return Err(refuse(format!(
                "{} changed while the export was prepared; nothing was written",
                parent.display()
            )));
        }
        if let Some(lock) = unswappable(&target)? {
            return Self::inside_with(target, lock);
        }
        let dir = fresh_dir(&parent, || target.sibling("partial"), &target)?;
        Ok(Self {
            dir,
            target,
            place: Place::Beside,
            committed: false,
        })
    }

    /// The staging of [`Staging::new`] for a target that cannot be swapped (a mount point), for
    /// tests on any file system.
    #[cfg(test)]
    pub(super) fn inside(target: Target) -> Result<Self> {
        let lock = File::open(&target.resolved).map_err(|e| Error::io(&target.resolved, e))?;
        Self::inside_with(target, lock)
    }

    /// Staging inside the (locked) target.
    fn inside_with(target: Target, lock: File) -> Result<Self> {
        let dir = fresh_dir(&target.resolved, || ".graftlm-partial".into(), &target)?;
        Ok(Self {
            dir,
            target,
            place: Place::Inside(lock),
            committed: false,
        })
    }

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

    /// Moves the files into place (see the module docs). Without `force`, an output another
    /// process put there meanwhile wins and this one is discarded ([`Error::Busy`]).
    pub fn commit(mut self) -> Result<PathBuf> {
        // The files are synced; their directory entries too, before anything publishes them.
        sync_dir(&self.dir);
        match self.place {
            Place::Beside => self.commit_beside()?,
            Place::Inside(_) => self.commit_inside()?,
        }
        self.committed = true;
        sync_dir(&self.target.parent());
        Ok(self.target.given.clone())
    }

    fn commit_beside(&mut self) -> Result<()> {
        let out = self.target.resolved.clone();
        for _ in 0..16 {
            let e = match fs::rename(&self.dir, &out) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if fs::symlink_metadata(&out).is_err() {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(&out, e));
            }
            // Something is there. `rename` replaces only an empty directory, and reports
            // anything else as taken; any other failure (a mount point appearing, a full disk) is
            // an I/O error, not a lost race.
            if !is_taken(&e) {
                return Err(Error::io(&out, e));
            }
            if fs::remove_dir(&out).is_ok() {
                continue; // an empty directory, gone now
            }
            if !self.target.force {
                return Err(lost(&self.target));
            }
            return self.replace(&out);
        }
        Err(lost(&self.target))
    }

    /// Replaces the full directory `out` with the staging directory (`force`).
    fn replace(&mut self, out: &Path) -> Result<()> {
        if exchange(&self.dir, out)? {
            // The staging path now holds the old output.
            let _ = fs::remove_dir_all(&self.dir);
            return Ok(());
        }
        let aside = self.target.parent().join(self.target.sibling("old"));
        fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
        if let Err(e) = fs::rename(&self.dir, out) {
            // Put the old output back rather than leave nothing at `out`.
            let _ = fs::rename(&aside, out);
            return Err(Error::io(out, e));
        }
        let _ = fs::remove_dir_all(&aside);
        Ok(())
    }

    /// Inside the target (locked): clears it under `force`, checks it holds nothing else
    /// otherwise, and renames the files in.
    fn commit_inside(&mut self) -> Result<()> {
        let out = self.target.resolved.clone();
        let staging_name = self.dir.file_name().map(|n| n.to_os_string());
        for e in fs::read_dir(&out)
            .map_err(|e| Error::io(&out, e))?
            .flatten()
        {
            if Some(e.file_name()) == staging_name {
                continue;
            }
            if !self.target.force {
                return Err(lost(&self.target));
            }
            let p = e.path();
            let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            let r = if is_dir {
                fs::remove_dir_all(&p) // does not follow links
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| Error::io(&p, e))?;
        }
        for e in fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
        {
            let to = out.join(e.file_name());
            fs::rename(e.path(), &to).map_err(|e| Error::io(&to, e))?;
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

/// `rename` found the target taken: a directory that is not empty, or not a directory.
fn is_taken(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        DirectoryNotEmpty | AlreadyExists | NotADirectory | IsADirectory
    )
}

/// Swaps `a` and `b` atomically (Linux `renameat2(RENAME_EXCHANGE)`); `Ok(false)` where that is
/// not available (another system, an old kernel or a file system without it).
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
        let (Some(ca), Some(cb)) = (c(a), c(b)) else {
            return Ok(false);
        };
        // SAFETY: two valid NUL-terminated paths; the call only renames.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(false),
            _ => Err(Error::io(b, e)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// When the target exists but cannot be renamed onto (a mount point, or a parent graftlm may
/// not write), the target opened and locked for an export inside it; `None` otherwise.
fn unswappable(t: &Target) -> Result<Option<File>> {
    let out = &t.resolved;
    let Ok(m) = fs::symlink_metadata(out) else {
        return Ok(None);
    };
    if !m.is_dir() {
        return Ok(None);
    }
    let parent = t.parent();
    #[cfg(unix)]
    let mount_point = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&parent).is_ok_and(|p| p.dev() != m.dev())
    };
    #[cfg(not(unix))]
    let mount_point = false;
    if !mount_point && probe_writable(&parent) {
        return Ok(None);
    }
    let dir = File::open(out).map_err(|e| Error::io(out, e))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a valid descriptor we own; flock only takes an advisory lock.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Busy(format!(
                "another export is writing into {}",
                t.given.display()
            )));
        }
    }
    Ok(Some(dir))
}

/// Whether a directory can be created in `dir` (permissions, a read-only file system).
fn probe_writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".graftlm-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let _ = fs::remove_dir(&probe);
            true
        }
        Err(e) => e.kind() == io::ErrorKind::AlreadyExists,
    }
}

/// A new directory in `within`, named by `name` (made unique), created exclusively.
fn fresh_dir(within: &Path, name: impl Fn() -> std::ffi::OsString, t: &Target) -> Result<PathBuf> {
    for i in 0..64 {
        let mut n = name();
        if i > 0 {
            n.push(format!("-{i}-{}", std::process::id()));
        }
        let dir = within.join(n);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(refuse(format!(
        "cannot create a fresh staging directory for {}",
        t.given.display()
    )))
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
