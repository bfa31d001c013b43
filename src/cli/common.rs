//! Flags shared by several subcommands: device selection, model choice, grid sizes.

use std::path::PathBuf;

use anyhow::bail;
use atheria::backend::{DeviceReport, DeviceRequest};
use atheria::io::model_dir::ModelSource;
use atheria::models::detect::ConfigHints;
use atheria::models::{Architecture, ModelConfig};
use clap::{Args, ValueEnum};

/// Which backend to run on.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// auto, cpu, wgpu, cuda or cuda:N. `auto` tries CUDA, a hardware wgpu adapter, then CPU.
    #[arg(long, env = "ATHERIA_DEVICE", default_value = "auto", value_parser = parse_device)]
    pub device: DeviceRequest,

    /// Fail instead of falling back when the requested backend cannot start.
    #[arg(long)]
    pub strict_device: bool,
}

fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    text.parse().map_err(|error: atheria::Error| error.to_string())
}

impl DeviceArgs {
    /// Prints the guarded constructor's report in one or two lines (and, with --verbose,
    /// everything it captured).
    pub fn print_report(&self, report: &DeviceReport, verbose: bool) {
        eprintln!("{report}");
        if verbose {
            print_captured(&report.attempts);
        }
    }
}

/// Prints every panic message captured while probing (shown with `--verbose`).
pub fn print_captured(attempts: &[atheria::backend::Attempt]) {
    for attempt in attempts {
        if let Some(failure) = &attempt.failure {
            for message in &failure.messages {
                eprintln!("  [{}] {}", attempt.backend, message.replace('\n', "\n    "));
            }
        }
    }
}

/// Parses one of a `ValueEnum`'s names with atheria's message (`unknown view 'x': expected
/// one of ...`) while clap still lists the names in the help.
#[derive(Clone)]
pub struct Names<T> {
    /// What a value is, for the message (`architecture`).
    what: &'static str,
    kind: std::marker::PhantomData<T>,
}

impl<T> Names<T> {
    pub fn new(what: &'static str) -> Self {
        Self { what, kind: std::marker::PhantomData }
    }
}

impl<T: ValueEnum + Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Names<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        atheria::names::parse::<T>(&text, self.what)
            .map_err(|message| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{message}\n")))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(T::value_variants().iter().filter_map(ValueEnum::to_possible_value)))
    }
}

/// The architecture and sizes of a law: what builds a new model, or what a weights file is
/// checked against (everything absent is inferred from the file).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ArchArgs {
    /// Architecture of the law. A new model needs --d-state and --hidden too; with a weights
    /// file it is inferred when absent.
    #[arg(long, value_parser = Names::<Architecture>::new("architecture"))]
    pub arch: Option<Architecture>,

    /// Complex channels per cell.
    #[arg(long)]
    pub d_state: Option<usize>,

    /// Hidden channels of the network.
    #[arg(long)]
    pub hidden: Option<usize>,
}

impl ArchArgs {
    /// What was given, as hints for reading a weights file.
    pub fn hints(&self) -> ConfigHints {
        ConfigHints { arch: self.arch, d_state: self.d_state, hidden: self.hidden }
    }

    /// The flags that were given, by name.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--arch", self.arch.is_some()),
            ("--d-state", self.d_state.is_some()),
            ("--hidden", self.hidden.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(flag, _)| flag)
        .collect()
    }
}

/// Which model to use.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A model directory (config.json + model.mpk).
    #[arg(long, conflicts_with = "weights")]
    pub model: Option<PathBuf>,

    /// PyTorch weights (.pth, .pt or .safetensors with the lab's names); the architecture and
    /// sizes are inferred from the tensors unless --arch, --d-state or --hidden say otherwise.
    #[arg(long)]
    pub weights: Option<PathBuf>,

    #[command(flatten)]
    pub arch: ArchArgs,

    /// Seed of an untrained model's initialisation.
    #[arg(long, default_value_t = 0)]
    pub model_seed: u64,
}

impl ModelArgs {
    /// Whether any flag chose a model.
    pub fn is_given(&self) -> bool {
        self.model.is_some() || self.weights.is_some() || !self.arch.given().is_empty()
    }

    /// Resolves the flags to a model source; no flag at all means the shipped default.
    pub fn source(&self) -> anyhow::Result<ModelSource> {
        let ArchArgs { arch, d_state, hidden } = self.arch;
        if let Some(dir) = &self.model {
            if !self.arch.given().is_empty() {
                bail!("--model takes its architecture from DIR/config.json; drop --arch/--d-state/--hidden");
            }
            return Ok(ModelSource::Dir(dir.clone()));
        }
        if let Some(path) = &self.weights {
            return Ok(ModelSource::Weights { path: path.clone(), hints: self.arch.hints() });
        }
        Ok(match (arch, d_state, hidden) {
            (Some(arch), Some(d_state), Some(hidden)) => {
                let config = ModelConfig::new(arch, d_state, hidden);
                config.validate()?;
                ModelSource::Seeded { config, seed: self.model_seed }
            }
            (None, None, None) => ModelSource::Default,
            _ => bail!("--arch, --d-state and --hidden go together"),
        })
    }
}

/// A grid size: `N` (square) or `HxW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridSize {
    pub height: usize,
    pub width: usize,
}

impl std::str::FromStr for GridSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parse = |part: &str| {
            part.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("invalid grid size '{text}': expected N or HxW with N > 0"))
        };
        match text.split_once(['x', 'X']) {
            Some((height, width)) => Ok(GridSize { height: parse(height)?, width: parse(width)? }),
            None => {
                let side = parse(text)?;
                Ok(GridSize { height: side, width: side })
            }
        }
    }
}

impl std::fmt::Display for GridSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}
