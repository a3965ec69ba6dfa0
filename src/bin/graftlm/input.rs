//! What the command line reads from standard input (a prompt, batch requests, chat lines),
//! bounded in line with the model's context: input past the limit is refused (or, in chat,
//! skipped) instead of being read into memory.

use std::io::{BufRead, Read};

use graftlm::{Error, Result};

/// The most bytes of text read for one prompt of a model with context `block_size`: 1 KiB per
/// position (no tokenizer's tokens come near that), at least 1 MiB, at most 256 MiB. Input
/// beyond it could not fit the context anyway; reading it would only grow memory.
pub fn input_limit(block_size: usize) -> u64 {
    (block_size as u64)
        .saturating_mul(1024)
        .clamp(1 << 20, 256 << 20)
}

/// All of `r` (named `what` in errors) as text, refused past `limit` bytes.
pub fn read_limited(r: impl Read, limit: u64, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(what, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            what,
            format!("holds more than {limit} bytes, more than the model's context can take"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| Error::invalid(what, format!("is not UTF-8 ({e})")))
}

/// All of standard input, refused past `limit` bytes.
pub fn read_stdin(limit: u64) -> Result<String> {
    read_limited(std::io::stdin().lock(), limit, "<stdin>")
}

/// One line of input.
pub enum Line {
    End,
    Text(String),
    /// Longer than the limit: read to its end and dropped, never held.
    TooLong,
}

/// Reads one line of at most `limit` bytes; a longer one is consumed and reported.
pub fn read_line(r: &mut impl BufRead, limit: u64) -> Result<Line> {
    let mut bytes = Vec::new();
    let n = Read::take(&mut *r, limit.saturating_add(1))
        .read_until(b'\n', &mut bytes)
        .map_err(|e| Error::io("<stdin>", e))?;
    if n == 0 {
        return Ok(Line::End);
    }
    if bytes.len() as u64 > limit && bytes.last() != Some(&b'\n') {
        // Skip the rest of the line in bounded pieces.
        loop {
            let buf = r.fill_buf().map_err(|e| Error::io("<stdin>", e))?;
            if buf.is_empty() {
                break;
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    r.consume(i + 1);
                    break;
                }
                None => {
                    let len = buf.len();
                    r.consume(len);
                }
            }
        }
        return Ok(Line::TooLong);
    }
    String::from_utf8(bytes)
        .map(Line::Text)
        .map_err(|e| Error::invalid("<stdin>", format!("a line is not UTF-8 ({e})")))
}
