//! One error type for the whole engine. Every message names the file or the argument at fault,
//! so the CLI and the GUI can show it as it is.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that exists (or should) but is not what we need.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A bad argument or setting from the user (a tap name, t, a size...).
    #[error("{0}")]
    Invalid(String),
    /// Something valid that diffscope does not support yet (a block type, an activation...).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A job stopped because the user asked.
    #[error("cancelled")]
    Cancelled,
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }
}

/// Attach a file to errors from I/O and parsing.
pub trait WithPath<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T, E: std::fmt::Display> WithPath<T> for std::result::Result<T, E> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::file(path, e.to_string()))
    }
}
