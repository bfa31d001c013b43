//! `atheria import`: a checkpoint of the PyTorch lab to a model directory.
//!
//! The conversion happens on the host (the CPU backend only holds the tensors while the record
//! is encoded), so it needs no device. The directory is written next to its destination under a
//! temporary name, loaded back, and only then renamed into place: a failure at any point leaves
//! the destination as it was.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;

use crate::error::{Error, Result};
use crate::io::model_dir::{load_model, save_model};
use crate::io::weights::WeightFile;
use crate::models::detect::{resolve, ConfigHints};
use crate::models::{Model, ModelConfig};

/// What to import, and where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `.pth`/`.pt` (a bare state_dict or a training checkpoint) or `.safetensors`.
    pub checkpoint: PathBuf,
    /// The model directory to write.
    pub out: PathBuf,
    /// `--arch`, `--d-state`, `--hidden`; what is not given is inferred.
    pub hints: ConfigHints,
    /// Replace a non-empty `out`.
    pub force: bool,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The configuration written, inferred or given.
    pub config: ModelConfig,
    /// What was inferred or converted, one line each.
    pub notes: Vec<String>,
    /// Tensors read from the checkpoint.
    pub tensors: usize,
    /// Parameters in the imported network.
    pub params: usize,
    /// The model directory written.
    pub out: PathBuf,
}

impl ImportReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "imported {} d_state {} hidden {} ({} tensors, {} parameters) into {}",
            self.config.arch,
            self.config.d_state,
            self.config.hidden_channels,
            self.tensors,
            self.params,
            self.out.display()
        )
    }
}

/// Reads the checkpoint, works out its configuration, checks every tensor against it and writes
/// the model directory.
pub fn import(options: &ImportOptions) -> Result<ImportReport> {
    let out = &options.out;
    check_destination(out, options.force)?;
    let weights = WeightFile::read(&options.checkpoint)?;
    let resolved = resolve(&weights, &options.hints)?;
    let mut notes = resolved.notes;
    let converted = weights.origin.converted_dtypes();
    if !converted.is_empty() {
        notes.push(format!("converted {} tensors to f32", converted.join(", ")));
    }
    let mut config = resolved.config;
    config.trained = true;
    config.description = Some(format!(
        "imported from {}",
        options.checkpoint.file_name().map_or_else(
            || options.checkpoint.display().to_string(),
            |name| name.to_string_lossy().into_owned()
        )
    ));
    config.provenance = Some(provenance(&options.checkpoint, &weights));

    let device = Default::default();
    let model = Model::<NdArray>::from_weights(config, &weights, &device)?;
    let params = model.num_params();

    let staging = sibling(out, "import")?;
    remove_path(&staging);
    let written = save_model(&staging, &model).and_then(|()| {
        // What was written must load: the record and config are read back before the rename.
        load_model::<NdArray>(&staging, &device).map(|_| ())
    });
    if let Err(error) = written {
        remove_path(&staging);
        return Err(error);
    }
    if let Err(error) = move_into_place(&staging, out) {
        remove_path(&staging);
        return Err(error);
    }
    Ok(ImportReport { config: model.config, notes, tensors: weights.tensors.len(), params, out: out.clone() })
}

/// The provenance block of config.json.
fn provenance(checkpoint: &Path, weights: &WeightFile) -> serde_json::Value {
    let origin = &weights.origin;
    let mut block = serde_json::json!({
        "imported_from": checkpoint.display().to_string(),
        "format": origin.format,
        "dtypes": origin.dtypes,
    });
    let fields = block.as_object_mut().expect("a JSON object");
    if let Some(key) = &origin.state_dict_key {
        fields.insert("state_dict_key".into(), key.clone().into());
    }
    if !origin.stripped_prefixes.is_empty() {
        fields.insert("stripped_prefixes".into(), serde_json::json!(origin.stripped_prefixes));
    }
    if let Some(episode) = origin.episode {
        fields.insert("episode".into(), episode.into());
    }
    if let Some(metrics) = &origin.metrics {
        fields.insert("metrics".into(), metrics.clone());
    }
    block
}

/// `out` may be absent or an empty directory; anything else needs `force` (and a file is never
/// replaced by a directory).
fn check_destination(out: &Path, force: bool) -> Result<()> {
    let Ok(metadata) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !metadata.is_dir() {
        return Err(Error::format(out, "exists and is not a directory"));
    }
    let empty = std::fs::read_dir(out).map_err(|error| Error::io(out, error))?.next().is_none();
    if empty || force {
        Ok(())
    } else {
        Err(Error::OutputExists { path: out.to_path_buf() })
    }
}

/// A hidden path next to `out` (same file system, so renames are atomic).
fn sibling(out: &Path, what: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::format(out, "the output needs a directory name"))?
        .to_string_lossy();
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|error| Error::io(&parent, error))?;
    Ok(parent.join(format!(".{name}.{what}-{}", std::process::id())))
}

/// Renames `staging` to `out`; an existing `out` is moved aside first and removed only once the
/// new directory is in place (restored if the rename fails).
fn move_into_place(staging: &Path, out: &Path) -> Result<()> {
    let previous = if out.exists() {
        let aside = sibling(out, "previous")?;
        remove_path(&aside);
        std::fs::rename(out, &aside).map_err(|error| Error::io(out, error))?;
        Some(aside)
    } else {
        None
    };
    if let Err(error) = std::fs::rename(staging, out) {
        if let Some(aside) = &previous {
            let _ = std::fs::rename(aside, out);
        }
        return Err(Error::io(out, error));
    }
    if let Some(aside) = previous {
        remove_path(&aside);
    }
    if let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        if let Ok(handle) = std::fs::File::open(parent) {
            let _ = handle.sync_all();
        }
    }
    Ok(())
}

fn remove_path(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}
