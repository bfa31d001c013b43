//! `atheria import`: a checkpoint of the PyTorch lab (or a whole lab experiment) to a model
//! directory.
//!
//! The conversion happens on the host (the CPU backend only holds the tensors while the record
//! is encoded), so it needs no device. The directory is written next to its destination under a
//! temporary name, loaded back, and only then renamed into place: a failure at any point leaves
//! the destination as it was.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;

use crate::error::{Error, Result};
use crate::io::lab_experiment::{read_experiment, LabConfig, LabExperiment};
use crate::io::model_dir::{load_model, save_model};
use crate::io::weights::WeightFile;
use crate::models::detect::{resolve, ConfigHints};
use crate::models::{Architecture, Model, ModelConfig};

/// What to import, and where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `.pth`/`.pt` (a bare state_dict, a training checkpoint or a TorchScript module),
    /// `.safetensors`, or a lab experiment (its folder, or the `.zip` the lab exports).
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
    let experiment = read_experiment(&options.checkpoint)?;
    let (weights, hints) = match &experiment {
        Some(experiment) => (
            WeightFile::from_bytes(&experiment.checkpoint_name, &experiment.checkpoint)?,
            experiment_hints(&options.checkpoint, &experiment.config, &options.hints)?,
        ),
        None => (WeightFile::read(&options.checkpoint)?, options.hints),
    };
    let resolved = resolve(&weights, &hints)?;
    let mut notes = resolved.notes;
    let mut config = resolved.config;
    if let Some(experiment) = &experiment {
        notes.extend(apply_experiment(&options.checkpoint, experiment, &mut config)?);
    }
    let converted = weights.origin.converted_dtypes();
    if !converted.is_empty() {
        notes.push(format!("converted {} tensors to f32", converted.join(", ")));
    }
    config.trained = true;
    config.description = Some(format!(
        "imported from {}",
        options.checkpoint.file_name().map_or_else(
            || options.checkpoint.display().to_string(),
            |name| name.to_string_lossy().into_owned()
        )
    ));
    config.provenance = Some(provenance(&options.checkpoint, &weights, experiment.as_ref()));

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

/// What the experiment says about the architecture and sizes, as hints for the tensors; the
/// user's flags win where given.
fn experiment_hints(path: &Path, lab: &LabConfig, given: &ConfigHints) -> Result<ConfigHints> {
    let archs = lab_architectures(path, lab)?;
    if let Some(arch) = given.arch.filter(|arch| !archs.contains(arch)) {
        return Err(Error::InvalidModel(format!(
            "{}: --arch {arch} contradicts the experiment's MODEL_ARCHITECTURE {}",
            path.display(),
            lab.architecture
        )));
    }
    Ok(ConfigHints {
        arch: given.arch.or(if archs.len() == 1 { Some(archs[0]) } else { None }),
        d_state: given.d_state.or(lab.params.d_state),
        hidden: given.hidden.or(lab.params.hidden_channels),
    })
}

/// The architectures the experiment's `MODEL_ARCHITECTURE` can be.
fn lab_architectures(path: &Path, lab: &LabConfig) -> Result<&'static [Architecture]> {
    Architecture::from_lab_model_map(&lab.architecture).ok_or_else(|| Error::UnknownLayout {
        path: path.to_path_buf(),
        reason: format!(
            "the experiment's MODEL_ARCHITECTURE '{}' is not one atheria implements (UNET, UNET_UNITARY, \
             UNET_UNITARY_RMSNORM, UNET_CONVLSTM, MLP, DEEP_QCA)",
            lab.architecture
        ),
    })
}

/// Carries the experiment's decay, grids and initial state into `config`; one note per
/// setting.
fn apply_experiment(
    path: &Path,
    experiment: &LabExperiment,
    config: &mut ModelConfig,
) -> Result<Vec<String>> {
    let lab = &experiment.config;
    if !lab_architectures(path, lab)?.contains(&config.arch) {
        return Err(Error::UnknownLayout {
            path: experiment.checkpoint_name.clone(),
            reason: format!("its tensors are a {}, not the experiment's {}", config.arch, lab.architecture),
        });
    }
    let mut notes = vec![format!(
        "lab experiment{}: {} runs as {}; weights from {} (the newest checkpoint)",
        lab.name.as_ref().map(|name| format!(" '{name}'")).unwrap_or_default(),
        lab.architecture,
        config.arch,
        experiment.checkpoint_name.display()
    )];
    if let Some(gamma) = lab.gamma {
        crate::models::check_gamma(gamma)?;
        config.gamma = gamma;
        notes.push(format!("gamma {gamma} (GAMMA_DECAY)"));
    }
    let defaults = &mut config.run_defaults;
    defaults.training_grid = lab.training_grid;
    defaults.grid = lab.inference_grid;
    defaults.init = match lab.initial_state.as_deref() {
        None => None,
        Some("complex_noise") => Some("complex-noise".into()),
        Some(mode @ ("random" | "zeros")) => Some(mode.into()),
        Some(other) => {
            notes.push(format!(
                "INITIAL_STATE_MODE_INFERENCE '{other}' has no equivalent here: runs start from random unless --init says"
            ));
            None
        }
    };
    if let Some(init) = &defaults.init {
        notes.push(format!("runs start from {init} (INITIAL_STATE_MODE_INFERENCE)"));
    }
    if let Some(grid) = lab.training_grid {
        notes.push(format!(
            "trained on {grid}x{grid} (GRID_SIZE_TRAINING): larger runs tile a {grid}x{grid} start"
        ));
    }
    config.validate()?;
    Ok(notes)
}

/// The provenance block of config.json.
fn provenance(
    checkpoint: &Path,
    weights: &WeightFile,
    experiment: Option<&LabExperiment>,
) -> serde_json::Value {
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
    if let Some(class) = &origin.class_name {
        fields.insert("lab_class".into(), class.clone().into());
    }
    if let Some(experiment) = experiment {
        fields.insert(
            "lab_experiment".into(),
            serde_json::json!({
                "name": experiment.config.name,
                "MODEL_ARCHITECTURE": experiment.config.architecture,
                "checkpoint": experiment.checkpoint_name.display().to_string(),
            }),
        );
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
