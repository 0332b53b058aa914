//! One error type for the whole library: what went wrong, where, and what to do about it.

use std::fmt;

/// The class of a failure; front ends map it to an exit code (see `docs/OPERATIONS.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments or a malformed config file.
    Usage,
    /// A key or identity is missing, malformed or does not fit this vault.
    Key,
    /// The store (S3 bucket or directory) failed or is unreachable.
    Store,
    /// The capture source (etcd) failed or is unreachable.
    Source,
    /// Stored or captured data failed an integrity check.
    Integrity,
    /// A named object or snapshot does not exist.
    NotFound,
    /// Something that must not be overwritten already exists.
    AlreadyExists,
    /// Local file-system or process failure.
    Io,
}

impl ErrorKind {
    /// Process exit code for this kind (documented in docs/OPERATIONS.md).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Integrity => 3,
            ErrorKind::Key => 4,
            ErrorKind::Store => 5,
            ErrorKind::Source => 6,
            ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::Io => 1,
        }
    }
}

/// An error with context: `what` names the thing at fault, `hint` says what to do.
pub struct Error {
    pub kind: ErrorKind,
    pub what: String,
    pub hint: Option<String>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
        Error {
            kind,
            what: what.into(),
            hint: None,
            source: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn usage(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, what)
    }
    pub fn key(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Key, what)
    }
    pub fn store(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, what)
    }
    pub fn source_err(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Source, what)
    }
    pub fn integrity(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, what)
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, what)
    }
    pub fn io(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, what)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self)
    }
}

impl std::error::Error for Error {}

/// Attach context to any foreign error.
pub trait Context<T> {
    fn context(self, kind: ErrorKind, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, kind: ErrorKind, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, what()).with_source(e))
    }
}
