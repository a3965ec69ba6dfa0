//! The tokenizer (`tokenizer.json` through the `tokenizers` crate) with BOS/EOS resolved exactly as
//! LitGPT's `litgpt/tokenizer.py` does, and [`TextStream`], which turns token ids into text pieces
//! that are always whole UTF-8.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::prompt::TokenLookup;

/// A tokenizer plus LitGPT's BOS/EOS rules.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Beginning-of-sequence id (`tokenizer_config.json`, else `generation_config.json`).
    pub bos_id: Option<u32>,
    /// End-of-sequence ids: the first is LitGPT's `eos_id`; `generation_config.json` may list more.
    pub eos_ids: Vec<u32>,
    /// Whether encoding prepends BOS (LitGPT `check_if_bos_token_used`).
    pub use_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("use_bos", &self.use_bos)
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::file::read_to_string(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::parse(path, e))
}

/// `"<s>"` or `{"content": "<s>", ...}` → `"<s>"`.
fn token_content(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

/// Reads `tokenizer.json`. The text is first checked to be JSON: the `tokenizers` crate panics
/// (instead of returning an error) on some syntax errors inside its `decoder` section. Any other
/// panic inside that crate is caught and reported as an error on the file.
fn parse_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let err = |msg: String| Error::Tokenizer {
        path: path.to_path_buf(),
        msg,
    };
    let text = crate::file::read_to_string(path)?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| err(format!("not valid JSON: {e}")))?;
    let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>());
    match parsed {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(
            "malformed tokenizer (the tokenizers library panicked on it)".into(),
        )),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (+ `tokenizer_config.json`, `generation_config.json`) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        // Anything there is read (and a FIFO or directory refused by name); nothing: not found.
        if !path.exists() {
            let why = if dir.join("tokenizer.model").is_file() {
                "only tokenizer.model (SentencePiece) is present; graftlm needs tokenizer.json"
            } else {
                "tokenizer.json not found"
            };
            return Err(Error::Tokenizer {
                path,
                msg: why.into(),
            });
        }
        let inner = parse_tokenizer_json(&path)?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?;
        let lookup = |tok: &str| -> Result<u32> {
            inner.token_to_id(tok).ok_or_else(|| Error::Tokenizer {
                path: cfg_path.clone(),
                msg: format!("token {tok:?} is not in the vocabulary"),
            })
        };
        let mut bos_id = None;
        let mut eos_ids = Vec::new();
        if let Some(c) = &cfg {
            if let Some(b) = token_content(c.get("bos_token")) {
                bos_id = Some(lookup(&b)?);
            }
            if let Some(e) = token_content(c.get("eos_token")) {
                eos_ids.push(lookup(&e)?);
            }
        }
        if let Some(g) = read_json(&dir.join("generation_config.json"))? {
            if bos_id.is_none() {
                bos_id = ids_of(g.get("bos_token_id")).first().copied();
            }
            for id in ids_of(g.get("eos_token_id")) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let use_bos = Self::bos_used(dir, cfg.as_ref());
        if use_bos && bos_id.is_none() {
            return Err(Error::Tokenizer {
                path: cfg_path,
                msg: "BOS is required (add_bos_token) but no bos_token is defined".into(),
            });
        }
        Ok(Self {
            inner,
            path,
            bos_id,
            eos_ids,
            use_bos,
        })
    }

    /// LitGPT `Tokenizer.check_if_bos_token_used`.
    fn bos_used(dir: &Path, cfg: Option<&serde_json::Value>) -> bool {
        let Some(cfg) = cfg else { return false };
        let stem = dir
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem.starts_with("Meta-Llama-3") || stem.starts_with("Llama-3") {
            return true;
        }
        if stem.starts_with("SmolLM2") && name.ends_with("Instruct") {
            return true;
        }
        if let Some(v) = cfg.get("add_bos_token") {
            return v.as_bool().unwrap_or(false);
        }
        cfg.get("tokenizer_class").and_then(|c| c.as_str()) == Some("LlamaTokenizer")
    }

    /// LitGPT's `eos_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_ids.first().copied()
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The path of `tokenizer.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw_encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("cannot encode: {e}"),
            })
    }

    /// LitGPT `encode(text)`: BOS added or removed per `use_bos`, a trailing EOS removed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, None)
    }

    /// LitGPT `encode(text, bos=bos)`.
    pub fn encode_with(&self, text: &str, bos: Option<bool>) -> Result<Vec<u32>> {
        let mut ids = self.raw_encode(text)?;
        if bos.unwrap_or(self.use_bos) {
            let b = self.bos_id.ok_or_else(|| Error::Tokenizer {
                path: self.path.clone(),
                msg: "this tokenizer has no BOS token".into(),
            })?;
            if ids.first() != Some(&b) {
                ids.insert(0, b);
            }
        } else if !ids.is_empty() && ids.first() == self.bos_id.as_ref() {
            ids.remove(0);
        }
        if !ids.is_empty() && ids.last() == self.eos_id().as_ref() {
            ids.pop();
        }
        Ok(ids)
    }

    /// Decodes ids to text, skipping special tokens (as LitGPT's `decode`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            msg: format!("cannot decode: {e}"),
        })
    }

    /// The token string of `id`, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

impl TokenLookup for Tokenizer {
    fn eos_id(&self) -> Option<u32> {
        Tokenizer::eos_id(self)
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    fn encode_no_bos(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, Some(false)).unwrap_or_default()
    }
}

/// Incremental detokenizer: feed ids, get text pieces that are whole UTF-8 and that concatenate
/// to the text the ids add after the context.
#[derive(Debug)]
pub struct TextStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prev: usize,
    cur: usize,
}

impl<'a> TextStream<'a> {
    /// A stream whose output continues `context` (e.g. the prompt's last ids), so that a leading
    /// space of the first new token is kept as it would be in the full text.
    pub fn new(tok: &'a Tokenizer, context: &[u32]) -> Self {
        let keep = context.len().min(4);
        let ids = context[context.len() - keep..].to_vec();
        Self {
            tok,
            prev: 0,
            cur: ids.len(),
            ids,
        }
    }

    /// Adds one id; returns the new text if it ends on a complete character.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prev..self.cur])?;
        let after = self.tok.decode(&self.ids[self.prev..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let piece = tail(&before, &after);
            self.prev = self.cur;
            self.cur = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Whatever text is still held back (e.g. an incomplete character at the end).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prev..self.cur])?;
        let after = self.tok.decode(&self.ids[self.prev..])?;
        self.prev = self.ids.len();
        self.cur = self.ids.len();
        if after.len() > before.len() {
            Ok(Some(tail(&before, &after)))
        } else {
            Ok(None)
        }
    }
}

/// The part of `after` that follows `before` (normally a prefix of it).
fn tail(before: &str, after: &str) -> String {
    after
        .strip_prefix(before)
        .or_else(|| after.get(before.len()..))
        .unwrap_or(after)
        .to_string()
}
