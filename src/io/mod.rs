//! Files: model directories, PyTorch and safetensors weights, state files, and the atomic
//! write they all go through.

pub mod lab_experiment;
mod lab_state;
pub mod model_dir;
pub mod pickle;
pub mod run_checkpoint;
pub mod state_file;
pub mod torch_archive;
pub mod weights;

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// A float tensor on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Number of NaN or infinite values.
    pub fn non_finite(&self) -> usize {
        self.data.iter().filter(|value| !value.is_finite()).count()
    }
}

/// Writes `bytes` to `path` so that a reader (or a crash at any instant) sees either the old
/// file or the complete new one: write a temporary file in the same directory, flush it to
/// disk, then rename it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(directory).map_err(|error| Error::io(directory, error))?;
    let file_name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(Error::io(&temporary, error));
    }
    fs::rename(&temporary, path).map_err(|error| {
        let _ = fs::remove_file(&temporary);
        Error::io(path, error)
    })?;
    // Make the rename itself durable.
    if let Ok(handle) = fs::File::open(directory) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// The SHA-256 of `bytes` as 64 lowercase hex digits (what `sha256sum` prints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|error| Error::io(path, error))
}
