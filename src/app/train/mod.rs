//! Training runs: `atheria train`'s work, on any backend through the guarded constructor.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;

use crate::backend::{BackendJob, DeviceReport, DeviceRequest};
use crate::error::{Error, Result};
use crate::interrupt::Interruption;
use crate::io::write_atomic;
use crate::kernels::EngineBackend;
use crate::plot::{plot_series, Series};
use crate::training::checkpoint::{self, BEST, LAST};
use crate::training::{provenance, EpisodeReport, TrainConfig, Trainer};

/// One row per episode, inside the run's directory.
pub const METRICS_FILE: &str = "metrics.csv";
/// The run's settings, as a `--config` file.
pub const CONFIG_FILE: &str = "train.toml";
/// Pictures of the final state of some episodes.
pub const FRAMES_DIR: &str = "frames";
/// The loss curves.
pub const PLOT_FILE: &str = "metrics.png";

/// A new run, or the continuation of the one in `out`.
// Made once per run: boxing the configuration would only cost readability.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TrainStart {
    /// A new run with these settings.
    New(TrainConfig),
    /// Continue from `out/last` with its saved settings; `episodes` may change the run's length.
    Resume {
        /// The new total of episodes, if it changes.
        episodes: Option<u64>,
    },
}

/// What to train and where.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// A new run, or a resumed one.
    pub start: TrainStart,
    /// Holds the checkpoints, `metrics.csv`, the plots and the frames.
    pub out: PathBuf,
    /// Where to train.
    pub device: DeviceRequest,
    /// Fail instead of falling back when the device cannot start.
    pub strict_device: bool,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// The command line, recorded in the trained model's provenance.
    pub command: String,
    /// Who else follows the run (the live lab), and may stop it.
    pub observer: Option<Observer>,
}

/// Follows a training run: each episode's report, and a stop request checked between
/// episodes (a stop checkpoints the episode reached, as Ctrl-C does).
pub trait TrainObserver: Send + Sync {
    /// An episode finished.
    fn episode(&self, report: &EpisodeReport);
    /// Whether the run should stop now.
    fn stop_requested(&self) -> bool;
}

/// A shared [`TrainObserver`].
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<dyn TrainObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// How the device was chosen.
    pub device: Option<DeviceReport>,
    /// The backend that trained.
    pub backend: &'static str,
    /// Episodes run by this invocation (not counting those before a resume).
    pub episodes_run: u64,
    /// Episodes of the run so far, resumed ones included.
    pub episodes_total: u64,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// The last episode's loss and terms.
    pub last_metrics: Vec<(String, f64)>,
    /// The newest checkpoint.
    pub last: Option<PathBuf>,
    /// The checkpoint with the best metric.
    pub best: Option<PathBuf>,
    /// Set when a signal stopped training early (after a checkpoint of the last episode).
    pub interrupted: Option<Interruption>,
}

impl TrainReport {
    /// One line: what ran where, how long, and the final metrics.
    pub fn summary(&self) -> String {
        let metrics: Vec<String> =
            self.last_metrics.iter().map(|(name, value)| format!("{name} {value:.4}")).collect();
        let mut line = format!(
            "trained {} episode(s) on {} in {:.1} s (run total {}); {}",
            self.episodes_run,
            self.backend,
            self.seconds,
            self.episodes_total,
            metrics.join(", ")
        );
        if let Some(last) = &self.last {
            line.push_str(&format!("\nlast checkpoint: {}", last.display()));
        }
        if let Some(best) = &self.best {
            line.push_str(&format!("\nbest checkpoint: {}", best.display()));
        }
        line
    }
}

/// Trains as `options` say. The device report goes to `on_device` before training starts.
pub fn train(options: &TrainOptions, on_device: &dyn Fn(&DeviceReport)) -> Result<TrainReport> {
    let (mut report, device) =
        super::run_on_device(options.device, options.strict_device, on_device, TrainJob { options })?;
    report.device = Some(device);
    Ok(report)
}

struct TrainJob<'a> {
    options: &'a TrainOptions,
}

impl BackendJob for TrainJob<'_> {
    type Output = Result<TrainReport>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        run_training::<Autodiff<B>>(self.options, &device)
    }
}

/// Trains as `options` say on `device` of autodiff backend `B` (what [`train`] runs once it
/// has a device).
pub(crate) fn run_training<B>(options: &TrainOptions, device: &B::Device) -> Result<TrainReport>
where
    B: burn::tensor::backend::AutodiffBackend + EngineBackend,
{
    let out = &options.out;
    fs::create_dir_all(out).map_err(|error| Error::io(out, error))?;
    checkpoint::clean_leftovers(out);
    let last = checkpoint::resolve(out, LAST);
    let mut trainer = match (&last, &options.start) {
        (Some(dir), TrainStart::Resume { episodes }) => Trainer::<B>::resume(dir, *episodes, device)?,
        (None, TrainStart::Resume { .. }) => {
            return Err(Error::InvalidTraining(format!(
                "{} holds no checkpoint to resume from (no '{LAST}')",
                out.display()
            )))
        }
        (Some(_), TrainStart::New(_)) => {
            return Err(Error::InvalidTraining(format!(
                "{} already holds a training run; pass --resume to continue it, or choose another --out",
                out.display()
            )))
        }
        (None, TrainStart::New(config)) => Trainer::<B>::new(config.clone(), device)?,
    };
    let config = trainer.config.clone();
    let estimate = crate::memory::training(
        &trainer.model.config,
        config.batch,
        config.grid,
        config.qca_steps,
        B::tensors_on_host(),
    );
    crate::memory::check_host(&estimate, B::engine_name())?;
    let config_text = toml::to_string_pretty(&config)
        .map_err(|error| Error::format(out.join(CONFIG_FILE), error.to_string()))?;
    write_atomic(&out.join(CONFIG_FILE), config_text.as_bytes())?;

    let mut metrics = MetricsLog::open(&out.join(METRICS_FILE), trainer.state.episode)?;
    let frames = out.join(FRAMES_DIR);
    let first = trainer.state.episode;
    let bar = super::progress_bar(config.episodes, "train", options.progress);
    bar.set_position(first);
    let started = Instant::now();
    let mut checkpointed_at = Instant::now();
    let mut window: Vec<f64> = Vec::new();
    let mut interrupted = None;
    let mut checkpointed = trainer.state.episode;
    while !trainer.finished() {
        let signal = crate::interrupt::check(trainer.state.episode, config.episodes);
        let requested = options.observer.as_ref().is_some_and(|observer| observer.0.stop_requested());
        if signal.is_some() || requested {
            // A checkpoint of the episode reached, unless it has one, so that --resume
            // continues exactly from here.
            if checkpointed != trainer.state.episode {
                trainer.state.seconds += checkpointed_at.elapsed().as_secs_f64();
                let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
                trainer.checkpoint(out, mean)?;
                metrics.plot(&out.join(PLOT_FILE))?;
            }
            interrupted = signal;
            break;
        }
        let (report, psi) = trainer.episode()?;
        metrics.append(&report, started.elapsed().as_secs_f64())?;
        if let Some(observer) = &options.observer {
            observer.0.episode(&report);
        }
        window.push(report.metric);
        bar.set_message(progress_message(&report));
        bar.inc(1);
        let done = report.episode + 1;
        if config.frame_every > 0 && done % config.frame_every == 0 {
            fs::create_dir_all(&frames).map_err(|error| Error::io(&frames, error))?;
            super::outputs::write_density_frame(&frames, &psi, done)?;
        }
        if done % config.checkpoint_every == 0 || trainer.finished() {
            trainer.state.seconds += checkpointed_at.elapsed().as_secs_f64();
            checkpointed_at = Instant::now();
            let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
            window.clear();
            let finished = trainer.finished();
            if finished {
                trainer.model.config.provenance = Some(provenance(&config, &trainer.state, &options.command));
            }
            trainer.checkpoint(out, mean)?;
            checkpointed = trainer.state.episode;
            metrics.plot(&out.join(PLOT_FILE))?;
        }
    }
    bar.finish_and_clear();
    Ok(TrainReport {
        device: None,
        backend: B::engine_name(),
        episodes_run: trainer.state.episode - first,
        episodes_total: trainer.state.episode,
        seconds: started.elapsed().as_secs_f64(),
        last_metrics: trainer.state.metrics.clone(),
        last: checkpoint::resolve(out, LAST),
        best: checkpoint::resolve(out, BEST),
        interrupted,
    })
}

fn progress_message(report: &EpisodeReport) -> String {
    let terms: Vec<String> = report.terms.iter().map(|(name, value)| format!("{name} {value:.4}")).collect();
    format!("loss {:.4} ({}) lr {:.1e}", report.loss, terms.join(", "), report.lr)
}

/// `metrics.csv`, one row per episode, appended as training goes, and the same rows kept in
/// memory for the plot. On resume, rows of episodes after the checkpoint (run before a crash,
/// about to be run again) are dropped first.
struct MetricsLog {
    path: PathBuf,
    file: Option<fs::File>,
    /// The columns, once known (from the file, or from the first episode).
    names: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl MetricsLog {
    fn open(path: &Path, next_episode: u64) -> Result<Self> {
        let mut log = Self { path: path.to_path_buf(), file: None, names: Vec::new(), rows: Vec::new() };
        if path.exists() {
            let text = fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
            let mut lines = text.lines();
            if let Some(header) = lines.next() {
                log.names = header.split(',').map(str::to_string).collect();
            }
            let mut kept: Vec<&str> = text.lines().take(1).collect();
            for line in lines {
                let row: Vec<f64> =
                    line.split(',').map(|field| field.parse::<f64>().unwrap_or(f64::NAN)).collect();
                let episode = line.split(',').next().and_then(|episode| episode.parse::<u64>().ok());
                if episode.is_some_and(|episode| episode < next_episode) && row.len() == log.names.len() {
                    kept.push(line);
                    log.rows.push(row);
                }
            }
            let mut joined = kept.join("\n");
            if !joined.is_empty() {
                joined.push('\n');
            }
            write_atomic(path, joined.as_bytes())?;
        } else if next_episode > 0 {
            // A resumed run whose log was lost starts a new one.
            write_atomic(path, b"")?;
        }
        Ok(log)
    }

    fn append(&mut self, report: &EpisodeReport, seconds: f64) -> Result<()> {
        let terms = report.terms.iter().map(|(name, _)| name.clone());
        let names: Vec<String> = ["episode", "loss"]
            .into_iter()
            .map(str::to_string)
            .chain(terms)
            .chain(["metric", "lr", "noise", "grad_norm", "seconds"].into_iter().map(str::to_string))
            .collect();
        let values: Vec<f64> = [report.episode as f64, report.loss]
            .into_iter()
            .chain(report.terms.iter().map(|(_, value)| *value))
            .chain([report.metric, report.lr, report.noise, report.grad_norm, seconds])
            .collect();
        if self.file.is_none() {
            let empty = fs::metadata(&self.path).map(|m| m.len() == 0).unwrap_or(true);
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|error| Error::io(&self.path, error))?;
            if empty {
                writeln!(file, "{}", names.join(",")).map_err(|error| Error::io(&self.path, error))?;
                self.names = names;
            }
            self.file = Some(file);
        }
        let fields: Vec<String> = report.terms.iter().map(|(_, value)| format!("{value:.6e}")).collect();
        if let Some(file) = &mut self.file {
            writeln!(
                file,
                "{},{:.6e},{},{:.6e},{:.3e},{:.4e},{:.4e},{:.2}",
                report.episode,
                report.loss,
                fields.join(","),
                report.metric,
                report.lr,
                report.noise,
                report.grad_norm,
                seconds
            )
            .map_err(|error| Error::io(&self.path, error))?;
        }
        self.rows.push(values);
        Ok(())
    }

    /// Draws the loss, its terms, the learning rate and the gradient norm against episode.
    fn plot(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = self
            .names
            .iter()
            .enumerate()
            .filter(|(_, name)| !matches!(name.as_str(), "episode" | "seconds" | "noise"))
            .map(|(column, name)| Series {
                name: name.clone(),
                points: self
                    .rows
                    .iter()
                    .filter(|row| row.len() == self.names.len())
                    .map(|row| (row[0] + 1.0, row[column]))
                    .collect(),
            })
            .collect();
        plot_series(path, &series)
    }
}
