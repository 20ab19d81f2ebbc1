//! One error type for every reader and writer. Each variant names the file and the field.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: `{field}`: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: `{field}`: not supported: {reason}", file.display())]
    Unsupported {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: `{field}`: broken JSON: {source}", file.display())]
    Json {
        file: PathBuf,
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: model shape: {source}", file.display())]
    Config {
        file: PathBuf,
        #[source]
        source: engine::ConfigError,
    },
}

pub type Result<T> = std::result::Result<T, FormatError>;

impl FormatError {
    pub fn io(file: &Path, source: std::io::Error) -> FormatError {
        FormatError::Io {
            file: file.to_path_buf(),
            source,
        }
    }

    pub fn invalid(
        file: &Path,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> FormatError {
        FormatError::Invalid {
            file: file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn unsupported(
        file: &Path,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> FormatError {
        FormatError::Unsupported {
            file: file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn json(file: &Path, field: impl Into<String>, source: serde_json::Error) -> FormatError {
        FormatError::Json {
            file: file.to_path_buf(),
            field: field.into(),
            source,
        }
    }

    pub fn config(file: &Path, source: engine::ConfigError) -> FormatError {
        FormatError::Config {
            file: file.to_path_buf(),
            source,
        }
    }

    /// The file this error is about.
    pub fn file(&self) -> &Path {
        match self {
            FormatError::Io { file, .. }
            | FormatError::Invalid { file, .. }
            | FormatError::Unsupported { file, .. }
            | FormatError::Json { file, .. }
            | FormatError::Config { file, .. } => file,
        }
    }
}
