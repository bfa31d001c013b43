//! The crate's error type. Every failure a user can cause (a bad file, a bad flag, a device
//! that cannot start) is one of these variants, with enough context to act on it.

use std::path::{Path, PathBuf};

/// Errors returned by the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device string that is not `auto`, `cpu`, `wgpu`, `cuda` or `cuda:N`.
    #[error("unknown device '{0}': expected auto, cpu, wgpu, cuda or cuda:N")]
    UnknownDevice(String),

    /// The requested device could not start and fallback was not allowed (or nothing started).
    #[error("{0}")]
    DeviceUnavailable(String),

    /// A grid the U-Net cannot process.
    #[error("grid {height}x{width} is not supported: {reason}")]
    InvalidGrid {
        /// Rows asked for.
        height: usize,
        /// Columns asked for.
        width: usize,
        /// Why the architecture cannot process it.
        reason: String,
    },

    /// A CPU kernel path (`ATHERIA_SIMD`) that is unknown or that this processor cannot run.
    #[error("{0}")]
    InvalidSimdPath(String),

    /// A probe time limit (`ATHERIA_PROBE_TIMEOUT`) that is not a whole number of seconds above 0.
    #[error("{0}")]
    InvalidProbeTimeout(String),

    /// A model configuration that cannot be built: an unknown architecture, sizes out of
    /// range, a decay rate outside [0, 1].
    #[error("{0}")]
    InvalidModel(String),

    /// An initial state that cannot be made or does not fit the model (channels, memory).
    #[error("{0}")]
    InvalidState(String),

    /// A tool or noise specification that cannot act: an unknown name or key, a value out of
    /// range, a centre off the grid.
    #[error("{0}")]
    InvalidTool(String),

    /// An unknown view name.
    #[error("{0}")]
    InvalidView(String),

    /// Run settings that contradict each other or the run they continue: zero counts,
    /// options that do not apply, a checkpoint that is missing or already there.
    #[error("{0}")]
    InvalidRun(String),

    /// Training settings out of range, an unknown loss, an output directory in the wrong
    /// state for a new or resumed run.
    #[error("{0}")]
    InvalidTraining(String),

    /// Sparse-universe settings out of range: tiles, thresholds, regions, matter seeds, or a
    /// law the sparse engine cannot step.
    #[error("{0}")]
    InvalidSparse(String),

    /// Data-parallel training settings that cannot work: devices of different backends, a
    /// batch the peers cannot share, a node rank out of range, nodes that disagree.
    #[error("{0}")]
    InvalidParallel(String),

    /// The peers of a data-parallel run lost each other: a peer or node stopped, the
    /// coordinator cannot be reached, or a collective operation failed.
    #[error("{0}")]
    Collective(String),

    /// A computation left the finite numbers (a training loss of NaN or infinity).
    #[error("{what}: the computation diverged; {hint}")]
    Diverged {
        /// What diverged, and where.
        what: String,
        /// What to change.
        hint: String,
    },

    /// The backend failed while working (a device error reported by the runtime).
    #[error("the backend failed: {0}; run `atheria doctor` to check the device")]
    Backend(String),

    /// The backend could not read a tensor back to the host.
    #[error(
        "the backend could not read a tensor back to the host ({0}); if this is a GPU, run `atheria doctor`"
    )]
    ReadBack(String),

    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A file exists but its content is not what the format requires.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        message: String,
    },

    /// A tensor the architecture needs is absent from a weights file.
    #[error("{}: missing tensor '{name}' (expected shape {expected:?}) for architecture {arch}", path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's PyTorch name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The architecture being built.
        arch: String,
    },

    /// A weights file holds tensors the architecture does not use.
    #[error("{}: {} unexpected tensor(s) for architecture {arch}: {}", path.display(), names.len(), names.join(", "))]
    UnexpectedTensors {
        /// The weights file.
        path: PathBuf,
        /// The tensors left over.
        names: Vec<String>,
        /// The architecture being built.
        arch: String,
    },

    /// A tensor has the wrong shape for the architecture.
    #[error("{}: tensor '{name}' has shape {found:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor's PyTorch name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// A tensor is stored with a dtype that cannot hold weights or states.
    #[error("{}: tensor '{name}' has dtype {found}, expected a floating-point dtype ({expected})", path.display())]
    DType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype in the file.
        found: String,
        /// The dtypes that would do.
        expected: String,
    },

    /// A weights file whose tensors match no architecture of the registry.
    #[error("{}: cannot tell the architecture: {reason}", path.display())]
    UnknownLayout {
        /// The weights file.
        path: PathBuf,
        /// What the tensors (or the recorded class) say instead.
        reason: String,
    },

    /// A flag (`--arch`, `--d-state`, `--hidden`) that the tensors of a weights file contradict.
    #[error("{}: {flag} {given} does not match the file: tensor '{tensor}' {found}", path.display())]
    FlagMismatch {
        /// The weights file.
        path: PathBuf,
        /// The flag (`--arch`, ...).
        flag: String,
        /// Its value.
        given: String,
        /// The tensor that contradicts it.
        tensor: String,
        /// What that tensor says.
        found: String,
    },

    /// An output that exists and holds files, which an operation will not replace silently.
    #[error("{}: already exists and is not empty (pass --force to replace it)", path.display())]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },

    /// A request that cannot fit in the memory available, refused before allocating it.
    #[error("{what} needs about {needed}; the {backend} backend has {available} available (use a smaller grid, batch or model)")]
    InsufficientMemory {
        /// The request, in words.
        what: String,
        /// Its estimated size.
        needed: String,
        /// The memory the backend has.
        available: String,
        /// The backend.
        backend: String,
    },

    /// A file whose content does not match the checksum recorded for it: damaged or changed
    /// after it was written.
    #[error("{}: checksum mismatch ({what}): the file is damaged or was changed after it was written; restore it from a copy", path.display())]
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// Which checksum failed.
        what: String,
    },

    /// A loaded state or weight tensor holds NaN or infinity.
    #[error("{}: tensor '{name}' holds {count} non-finite value(s) (NaN or infinity)", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// How many values are not finite.
        count: usize,
    },
}

/// What kind of failure an [`Error`] is: how a caller that reports errors by kind (the Python
/// package's exception classes) groups the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFamily {
    /// A device that is unknown, cannot start, or failed while working.
    Device,
    /// A model or weights file that cannot be used.
    Model,
    /// A state (or grid) that does not fit, or holds non-finite values.
    State,
    /// A request that cannot be carried out as asked (a tool, a view, run or sparse settings).
    Usage,
    /// Training settings, a diverged loss, or a failed data-parallel run.
    Training,
    /// A file that cannot be read or written, or whose content is damaged.
    File,
    /// A request that would not fit in memory.
    Memory,
}

impl Error {
    /// The family of this error.
    pub fn family(&self) -> ErrorFamily {
        match self {
            Error::UnknownDevice(_)
            | Error::DeviceUnavailable(_)
            | Error::InvalidSimdPath(_)
            | Error::InvalidProbeTimeout(_)
            | Error::Backend(_)
            | Error::ReadBack(_) => ErrorFamily::Device,
            Error::InvalidModel(_)
            | Error::MissingTensor { .. }
            | Error::UnexpectedTensors { .. }
            | Error::ShapeMismatch { .. }
            | Error::DType { .. }
            | Error::UnknownLayout { .. }
            | Error::FlagMismatch { .. } => ErrorFamily::Model,
            Error::InvalidState(_) | Error::InvalidGrid { .. } | Error::NonFinite { .. } => {
                ErrorFamily::State
            }
            Error::InvalidTool(_)
            | Error::InvalidView(_)
            | Error::InvalidRun(_)
            | Error::InvalidSparse(_) => ErrorFamily::Usage,
            Error::InvalidTraining(_)
            | Error::Diverged { .. }
            | Error::InvalidParallel(_)
            | Error::Collective(_) => ErrorFamily::Training,
            Error::Io { .. }
            | Error::Format { .. }
            | Error::OutputExists { .. }
            | Error::ChecksumMismatch { .. } => ErrorFamily::File,
            Error::InsufficientMemory { .. } => ErrorFamily::Memory,
        }
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub(crate) fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), message: message.into() }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
