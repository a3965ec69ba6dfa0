//! How graftlm reads its input files.
//!
//! - Only regular files are opened (after symlinks are resolved): a FIFO, device or socket where
//!   a config or shard should be would block or never end, so it is refused before `open`, and
//!   again on the opened descriptor (opened non-blocking, so a file swapped for a FIFO in between
//!   cannot block either).
//! - Weights are read with positioned reads (`pread`) into graftlm's own buffers, never mapped:
//!   a file truncated or rewritten by another process while graftlm reads it gives an error
//!   ("the file ended early"), never `SIGBUS`, and every check (NaN/Inf, sizes) runs on the
//!   very bytes that are then used.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn not_regular(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what}); refusing to read it"),
    )
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if m.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

/// Opens `path` for reading if it is (or links to) a regular file.
fn open_checked(path: &Path) -> io::Result<File> {
    let m = std::fs::metadata(path)?;
    if !m.is_file() {
        return Err(not_regular(kind_of(&m)));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Keeps `open` of a FIFO swapped in since the check above from waiting for a writer.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(not_regular(kind_of(&m)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // A regular file: back to blocking reads (the flag means nothing for one, but do not
        // leave it set on a descriptor others may see).
        // SAFETY: a valid descriptor we own; F_GETFL/F_SETFL only read and set its flags.
        unsafe {
            let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(f)
}

/// Opens the regular file `path` for reading (`Error::Io` otherwise, kind `NotFound` when absent).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    open_checked(path).map_err(|e| Error::io(path, e))
}

/// [`open_regular`], with a missing file reported as [`Error::NotFound`] (`what` it should be).
pub(crate) fn open_input(path: &Path, what: &str) -> Result<File> {
    open_checked(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what: what.into(),
        },
        _ => Error::io(path, e),
    })
}

/// The text of the regular file `path`.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    let mut s = String::new();
    open_regular(path)?
        .read_to_string(&mut s)
        .map_err(|e| Error::io(path, e))?;
    Ok(s)
}

/// A regular file read at offsets. Its length is taken once, at open; every range is checked
/// against it, and a read that finds the file shorter than that fails cleanly.
#[derive(Debug)]
pub(crate) struct Positioned {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Positioned {
    pub fn open(path: &Path, what: &str) -> Result<Self> {
        let file = open_input(path, what)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length at open.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from byte `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.within(offset, buf.len() as u64)?;
        read_parallel(&self.file, buf, offset).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    e.kind(),
                    "the file ended early: it was truncated or replaced while graftlm read it",
                )
            } else {
                e
            };
            Error::io(&self.path, e)
        })
    }

    /// Bytes `start..end` as a new vector.
    pub fn read_vec(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let n = end.checked_sub(start).unwrap_or(u64::MAX);
        // Checked before allocating: the buffer is never larger than the file.
        self.within(start, n)?;
        let n = usize::try_from(n)
            .map_err(|_| Error::parse(&self.path, format!("{n} bytes do not fit in memory")))?;
        let mut v = vec![0u8; n];
        self.read_exact_at(&mut v, start)?;
        Ok(v)
    }

    /// Refuses `len` bytes from `offset` unless they lie within the length taken at open.
    fn within(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::parse(
                &self.path,
                format!(
                    "bytes {offset}..+{len} lie past the end of the file ({} bytes)",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    /// A second handle on the same open file (for readers that need `Read + Seek`).
    pub fn try_clone(&self) -> Result<File> {
        self.file.try_clone().map_err(|e| Error::io(&self.path, e))
    }
}

/// Large reads in pieces on the thread pool: the copy out of the page cache and the first touch
/// of fresh memory are most of a load, and both scale with threads.
fn read_parallel(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    const PIECE: usize = 1 << 20;
    if buf.len() > 2 * PIECE {
        use rayon::prelude::*;
        return buf
            .par_chunks_mut(PIECE)
            .enumerate()
            .try_for_each(|(i, piece)| read_at(f, piece, offset + (i * PIECE) as u64));
    }
    read_at(f, buf, offset)
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, offset)
}

#[cfg(windows)]
fn read_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_to_string(&p).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_to_string(&link).is_err());
        assert!(read_to_string(Path::new("/dev/zero")).is_err());
        assert!(read_to_string(t.path()).is_err());
    }

    #[test]
    fn positioned_reads_past_the_end_fail() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("w.bin");
        std::fs::write(&p, [7u8; 100]).unwrap();
        let f = Positioned::open(&p, "weights").unwrap();
        assert_eq!(f.read_vec(10, 20).unwrap(), vec![7u8; 10]);
        assert!(f.read_vec(90, 101).is_err());
        // Truncated after open: the read fails, it does not fault.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(50)
            .unwrap();
        let e = f.read_vec(40, 100).unwrap_err().to_string();
        assert!(e.contains("ended early"), "{e}");
    }
}
