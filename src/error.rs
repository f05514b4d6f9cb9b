//! The crate's error type: every place where user input enters returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in the library, each variant naming the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Lattice extents that do not describe a valid periodic lattice.
    #[error("invalid lattice: {0}")]
    InvalidLattice(String),
    /// A coupling, size, count or option outside its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user wrote it.
        name: String,
        /// Why the value was refused.
        reason: String,
    },
    /// Arrays or models whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A NaN or infinity appeared where a finite number is required.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file or string that does not parse as what it should be.
    #[error("malformed {what}: {reason}")]
    Format {
        /// What was being read (a runcard, a model file, a checkpoint, ...).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model, checkpoint or option that does not match the run it is used in.
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// A flow configuration names a custom transform or net that the layer registry used
    /// to build or load it does not hold.
    #[error(
        "the flow configuration names the custom {kind} `{name}`, which is not registered: \
         build or load the flow with a LayerRegistry holding it (FlowModel::new_with, \
         FlowModel::load_with)"
    )]
    Unregistered {
        /// `"transform"` or `"net"`.
        kind: String,
        /// The entry's name.
        name: String,
    },
    /// A run stopped on request before it produced anything to keep.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A compute device (GPU) that could not be used or failed during a computation.
    #[error("device error: {0}")]
    Device(String),
    /// The processes of a run (MPI ranks) could not be set up or disagree.
    #[error("communication error: {0}")]
    Communication(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unregistered`].
    pub fn unregistered(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Error::Unregistered {
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// A configuration error found while reading a file, restated as a fault of that file:
    /// an [`Error::InvalidParameter`] becomes an [`Error::Format`] naming the file (a size in
    /// a model file is not an option the user typed); other errors are kept.
    pub fn in_file(self, what: &str, path: &std::path::Path) -> Self {
        match self {
            Error::InvalidParameter { name, reason } => Error::format(
                format!("{what} {}", path.display()),
                format!("`{name}`: {reason}"),
            ),
            other => other,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that a parameter is finite, naming it in the error otherwise.
pub fn ensure_finite(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::param(name, format!("must be finite, got {value}")))
    }
}
