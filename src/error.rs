//! The one error type of graftlm. Every variant that concerns a file names it.

use std::path::PathBuf;

/// Everything that can go wrong in graftlm.
///
/// Errors that come from a file carry its path; errors about a tensor carry its name and, for
/// shape problems, both shapes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory that is required does not exist.
    #[error("{path}: not found ({what})")]
    NotFound { path: PathBuf, what: String },
    /// A file exists but its contents could not be parsed.
    #[error("{path}: cannot parse: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// A configuration field has a value graftlm cannot honour.
    #[error("{path}: unsupported value for `{field}`: {msg}")]
    UnsupportedConfig {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// The checkpoint describes an architecture graftlm does not know.
    #[error("{path}: unknown or unsupported architecture `{arch}`")]
    UnknownArchitecture { path: PathBuf, arch: String },
    /// A tensor the model needs is absent from the weight files.
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Weight files contain tensors the model does not use (usually: the wrong base model).
    #[error("{path}: {count} unexpected tensor(s), e.g. {examples}")]
    UnexpectedTensors {
        path: PathBuf,
        count: usize,
        examples: String,
    },
    /// A tensor is stored with a dtype graftlm cannot read, or its bytes are inconsistent.
    #[error("{path}: tensor `{name}`: {msg}")]
    BadTensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    /// The tokenizer files are missing, unreadable, or inconsistent.
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    /// The prompt style is unknown or malformed.
    #[error("prompt style: {0}")]
    PromptStyle(String),
    /// The prompt encodes to no tokens.
    #[error("the prompt is empty (it encodes to no tokens)")]
    EmptyPrompt,
    /// A caller-supplied argument is out of range.
    #[error("invalid argument `{name}`: {msg}")]
    InvalidArgument { name: String, msg: String },
    /// Prompt plus requested tokens do not fit the model's context.
    #[error(
        "context overflow: prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) = {total} exceeds the model's block_size {block_size}"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        max_new_tokens: usize,
        total: usize,
        block_size: usize,
    },
    /// A feature that exists in the format but not (yet) in graftlm.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A handle passed through the C ABI is not a live handle of its kind (freed, freed twice,
    /// of another kind, or never made by graftlm).
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    /// The call cannot run now: it would wait on itself (a streaming callback calling back into
    /// the model that is calling it) or the object is in use by another thread (a session).
    #[error("busy: {0}")]
    Busy(String),
}

/// `Result` with graftlm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::Parse {
            path: path.into(),
            msg: msg.to_string(),
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(name: &str, msg: impl std::fmt::Display) -> Self {
        Error::InvalidArgument {
            name: name.to_string(),
            msg: msg.to_string(),
        }
    }
}
