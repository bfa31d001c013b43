//! Training runs: `atheria train`'s work, on any backend through the guarded constructor.

mod metrics;
pub mod parallel;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::collective::ReduceOperation;
use burn::tensor::backend::AutodiffBackend;

use crate::backend::{BackendJob, DeviceReport, DeviceRequest};
use crate::error::{Error, Result};
use crate::interrupt::{Interruption, StopSignal};
use crate::io::write_atomic;
use crate::kernels::EngineBackend;
use crate::training::checkpoint::{self, BEST, LAST};
use crate::training::{provenance, EpisodeReport, TrainConfig, Trainer};
use metrics::MetricsLog;
pub use parallel::{NodeOptions, ParallelOptions};

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
    /// Data-parallel training over several devices or machines (`None`: one `device`).
    pub parallel: Option<ParallelOptions>,
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
    /// Peers (devices of every node) that trained together; 1 without data parallelism.
    pub peers: usize,
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
        let backend = match self.peers {
            1 => self.backend.to_string(),
            peers => format!("{peers} {} peers", self.backend),
        };
        let mut line = format!(
            "trained {} episode(s) on {} in {:.1} s (run total {}); {}",
            self.episodes_run,
            backend,
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

/// Trains as `options` say. The device report goes to `on_device` before training starts
/// (once per device of a data-parallel run).
pub fn train(options: &TrainOptions, on_device: &dyn Fn(&DeviceReport)) -> Result<TrainReport> {
    if let Some(parallel) = &options.parallel {
        return parallel::train(options, parallel, on_device);
    }
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
    B: AutodiffBackend + EngineBackend,
{
    let mut trainer = open_trainer::<B>(options, device, Role::Run)?;
    check_memory(&trainer, 1)?;
    train_loop(&mut trainer, options, Role::Run)
}

/// What one trainer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// The run: checkpoints, metrics, plots, frames (a single trainer, or peer 0).
    Run,
    /// A log of its episodes, `OUT/node-R.log` (the first peer of another node).
    NodeLog(u32),
    /// Nothing (the other peers of a node).
    Quiet,
}

/// A new trainer, or one resumed from `OUT/last`; `Role::Run` checks that `out` is in the
/// state the start asks for.
fn open_trainer<B>(options: &TrainOptions, device: &B::Device, role: Role) -> Result<Trainer<B>>
where
    B: AutodiffBackend + EngineBackend,
{
    let out = &options.out;
    fs::create_dir_all(out).map_err(|error| Error::io(out, error))?;
    if role == Role::Run {
        checkpoint::clean_leftovers(out);
    }
    let last = checkpoint::resolve(out, LAST);
    match (&last, &options.start) {
        (Some(dir), TrainStart::Resume { episodes }) => Trainer::<B>::resume(dir, *episodes, device),
        (None, TrainStart::Resume { .. }) if role == Role::Run => Err(Error::InvalidTraining(format!(
            "{} holds no checkpoint to resume from (no '{LAST}')",
            out.display()
        ))),
        (None, TrainStart::Resume { .. }) => Err(Error::InvalidParallel(format!(
            "{} holds no checkpoint to resume from (no '{LAST}'): every node resumes from the run's directory, so give each the same --out on a shared disk, or a copy of node 0's",
            out.display()
        ))),
        (Some(_), TrainStart::New(_)) if role == Role::Run => Err(Error::InvalidTraining(format!(
            "{} already holds a training run; pass --resume to continue it, or choose another --out",
            out.display()
        ))),
        (_, TrainStart::New(config)) => Trainer::<B>::new(config.clone(), device),
    }
}

/// Refuses a run that would not fit in memory: `trainers` of them share the host when the
/// backend keeps its tensors there.
fn check_memory<B: AutodiffBackend + EngineBackend>(trainer: &Trainer<B>, trainers: usize) -> Result<()> {
    let config = &trainer.config;
    let universes = trainer.universes().len() * if B::tensors_on_host() { trainers } else { 1 };
    let estimate = crate::footprint::training(
        &trainer.model.config,
        universes,
        config.grid,
        config.qca_steps,
        B::tensors_on_host(),
    );
    crate::footprint::check_host(&estimate, B::engine_name())
}

/// Runs episodes until the run is finished or asked to stop, writing what `role` says.
fn train_loop<B>(trainer: &mut Trainer<B>, options: &TrainOptions, role: Role) -> Result<TrainReport>
where
    B: AutodiffBackend + EngineBackend,
{
    let out = &options.out;
    let config = trainer.config.clone();
    let mut metrics = None;
    let mut log = None;
    match role {
        Role::Run => {
            let config_text = toml::to_string_pretty(&config)
                .map_err(|error| Error::format(out.join(CONFIG_FILE), error.to_string()))?;
            write_atomic(&out.join(CONFIG_FILE), config_text.as_bytes())?;
            metrics = Some(MetricsLog::open(&out.join(METRICS_FILE), trainer.state.episode)?);
        }
        Role::NodeLog(node) => log = Some(NodeLog::create(out, node)?),
        Role::Quiet => {}
    }
    let frames = out.join(FRAMES_DIR);
    let first = trainer.state.episode;
    let bar = super::progress_bar(config.episodes, "train", options.progress && role == Role::Run);
    bar.set_position(first);
    let started = Instant::now();
    let mut checkpointed_at = Instant::now();
    let mut window: Vec<f64> = Vec::new();
    let mut interrupted = None;
    let mut checkpointed = trainer.state.episode;
    while !trainer.finished() {
        if let Some(stop) = stop_requested(trainer, options)? {
            // A checkpoint of the episode reached, unless it has one, so that --resume
            // continues exactly from here.
            if let Some(metrics) = &metrics {
                if checkpointed != trainer.state.episode {
                    trainer.state.seconds += checkpointed_at.elapsed().as_secs_f64();
                    let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
                    trainer.checkpoint(out, mean)?;
                    metrics.plot(&out.join(PLOT_FILE))?;
                }
            }
            interrupted = stop;
            break;
        }
        let (report, psi) = trainer.episode()?;
        let done = report.episode + 1;
        if let Some(log) = &mut log {
            log.episode(&report, started.elapsed().as_secs_f64())?;
        }
        let Some(metrics) = &mut metrics else { continue };
        metrics.append(&report, started.elapsed().as_secs_f64())?;
        if let Some(observer) = &options.observer {
            observer.0.episode(&report);
        }
        window.push(report.metric);
        bar.set_message(progress_message(&report));
        bar.inc(1);
        if config.frame_every > 0 && done % config.frame_every == 0 {
            fs::create_dir_all(&frames).map_err(|error| Error::io(&frames, error))?;
            super::outputs::write_training_frame(&frames, &psi, done)?;
        }
        if done % config.checkpoint_every == 0 || trainer.finished() {
            trainer.state.seconds += checkpointed_at.elapsed().as_secs_f64();
            checkpointed_at = Instant::now();
            let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
            window.clear();
            if trainer.finished() {
                trainer.model.config.provenance = Some(provenance(&config, &trainer.state, &options.command));
            }
            trainer.checkpoint(out, mean)?;
            checkpointed = trainer.state.episode;
            metrics.plot(&out.join(PLOT_FILE))?;
        }
    }
    bar.finish_and_clear();
    let writes_run = role == Role::Run;
    Ok(TrainReport {
        device: None,
        backend: B::engine_name(),
        peers: trainer.peer().map_or(1, |peer| peer.count),
        episodes_run: trainer.state.episode - first,
        episodes_total: trainer.state.episode,
        seconds: started.elapsed().as_secs_f64(),
        last_metrics: trainer.state.metrics.clone(),
        last: checkpoint::resolve(out, LAST).filter(|_| writes_run),
        best: checkpoint::resolve(out, BEST).filter(|_| writes_run),
        interrupted,
    })
}

/// Whether to stop before the next episode (`Some`, with the signal if one came): a signal or
/// the observer's request. The peers of a data-parallel run all stop at the same episode when
/// any of them is asked to.
fn stop_requested<B>(trainer: &Trainer<B>, options: &TrainOptions) -> Result<Option<Option<Interruption>>>
where
    B: AutodiffBackend + EngineBackend,
{
    let (episode, episodes) = (trainer.state.episode, trainer.config.episodes);
    let signal = crate::interrupt::check(episode, episodes);
    let requested = options.observer.as_ref().is_some_and(|observer| observer.0.stop_requested());
    let Some(peer) = trainer.peer() else {
        return Ok((signal.is_some() || requested).then_some(signal));
    };
    let local = [
        f64::from(u8::from(signal.is_some_and(|stop| stop.signal == StopSignal::Interrupt))),
        f64::from(u8::from(signal.is_some_and(|stop| stop.signal == StopSignal::Terminate))),
        f64::from(u8::from(requested)),
    ];
    let device = trainer.device();
    let any = peer.reduce::<B::InnerBackend>(&local, ReduceOperation::Sum, device, "agreeing to go on")?;
    if any.iter().all(|&count| count == 0.0) {
        return Ok(None);
    }
    let signal = if any[0] > 0.0 {
        Some(StopSignal::Interrupt)
    } else if any[1] > 0.0 {
        Some(StopSignal::Terminate)
    } else {
        None
    };
    Ok(Some(signal.map(|signal| Interruption { signal, step: episode, of: episodes })))
}

/// `OUT/node-R.log`: what a node other than node 0 writes, one line per episode.
struct NodeLog {
    path: PathBuf,
    file: fs::File,
}

impl NodeLog {
    fn create(out: &Path, node: u32) -> Result<Self> {
        let path = out.join(format!("node-{node}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| Error::io(&path, error))?;
        Ok(Self { path, file })
    }

    fn episode(&mut self, report: &EpisodeReport, seconds: f64) -> Result<()> {
        writeln!(self.file, "episode {} {} ({seconds:.1} s)", report.episode, progress_message(report))
            .map_err(|error| Error::io(&self.path, error))
    }
}

fn progress_message(report: &EpisodeReport) -> String {
    let terms: Vec<String> = report.terms.iter().map(|(name, value)| format!("{name} {value:.4}")).collect();
    format!("loss {:.4} ({}) lr {:.1e}", report.loss, terms.join(", "), report.lr)
}
