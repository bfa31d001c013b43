//! A training run started from the page: `atheria train`'s work on its own thread, on the live
//! lab's device, in a directory of `--runs`, followed episode by episode and stopped with a
//! checkpoint when asked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::backend::Autodiff;
use serde::Serialize;

use super::messages::{CheckpointSummary, TrainingStatus};
use super::protocol::TrainSettings;
use crate::app::train::{run_training, Observer, TrainObserver, TrainOptions, TrainReport, TrainStart};
use crate::backend::DeviceRequest;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::training::checkpoint::{read_state, resolve, BEST, LAST};
use crate::training::EpisodeReport;

/// One episode, as the page's chart draws it.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The episode (0-based).
    pub episode: u64,
    /// The loss.
    pub loss: f64,
    /// Its named terms.
    pub terms: Vec<(String, f64)>,
}

/// What the training thread and the simulation thread share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    finished: AtomicBool,
    points: Mutex<Vec<Point>>,
    outcome: Mutex<Option<String>>,
    /// The checkpoints described for the page so far (the `best` and `last` ones).
    described: Mutex<Vec<(PathBuf, Option<CheckpointSummary>)>>,
}

impl TrainObserver for Shared {
    fn episode(&self, report: &EpisodeReport) {
        if let Ok(mut points) = self.points.lock() {
            points.push(Point { episode: report.episode, loss: report.loss, terms: report.terms.clone() });
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A training run and its thread.
pub(super) struct TrainingRun {
    dir: PathBuf,
    episodes: u64,
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl TrainingRun {
    /// Starts training `settings` in a new directory of `runs`, on `device` of backend `B`.
    pub(super) fn start<B: EngineBackend>(
        runs: &Path,
        settings: TrainSettings,
        device: B::Device,
    ) -> Result<Self> {
        let config = settings.config();
        config.validate()?;
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_millis());
        let dir = runs.join(format!("run-{stamp}"));
        if dir.exists() {
            return Err(Error::InvalidTraining(format!("{} exists already", dir.display())));
        }
        let shared = Arc::new(Shared::default());
        let options = TrainOptions {
            start: TrainStart::New(config),
            out: dir.clone(),
            device: DeviceRequest::Auto,
            strict_device: true,
            progress: false,
            command: "atheria serve (the page's training)".into(),
            observer: Some(Observer(shared.clone())),
            parallel: None,
        };
        let episodes = settings.episodes;
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("atheria-training".into())
            .spawn(move || {
                let outcome = run_training::<Autodiff<B>>(&options, &device);
                let words = match outcome {
                    Ok(TrainReport { episodes_total, .. }) => format!("trained {episodes_total} episodes"),
                    Err(error) => format!("error: {error}"),
                };
                tracing::info!("training in {}: {words}", options.out.display());
                if let Ok(mut outcome) = thread_shared.outcome.lock() {
                    *outcome = Some(words);
                }
                thread_shared.finished.store(true, Ordering::Relaxed);
            })
            .map_err(|error| Error::InvalidTraining(format!("cannot start the training thread: {error}")))?;
        Ok(Self { dir, episodes, shared, handle: Some(handle) })
    }

    /// The run's directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the thread is still training.
    pub(super) fn is_running(&self) -> bool {
        !self.shared.finished.load(Ordering::Relaxed)
    }

    /// Asks the run to stop after its episode (it checkpoints first).
    pub(super) fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the run and waits for its checkpoint.
    pub(super) fn stop_and_wait(mut self) {
        self.request_stop();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }

    /// The checkpoint `which` (`best` or `last`) of the run.
    pub(super) fn checkpoint(&self, which: &str) -> Result<PathBuf> {
        let link = if which == "last" { LAST } else { BEST };
        resolve(&self.dir, link).ok_or_else(|| {
            Error::InvalidTraining(format!("the run in {} has no {which} checkpoint yet", self.dir.display()))
        })
    }

    /// The points after the first `since`.
    pub(super) fn points_since(&self, since: usize) -> Vec<Point> {
        self.shared
            .points
            .lock()
            .map(|points| points.iter().skip(since).cloned().collect())
            .unwrap_or_default()
    }

    /// The checkpoint `link` points at, for the page: its episode and the metric that chose
    /// it (null while there is none). Read again only when the link moves.
    fn describe(&self, link: &str) -> Option<CheckpointSummary> {
        let dir = resolve(&self.dir, link)?;
        let mut seen = self.shared.described.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, described)) = seen.iter().find(|(known, _)| *known == dir) {
            return *described;
        }
        let described = read_state(&dir)
            .ok()
            .map(|state| CheckpointSummary { episode: state.episode, metric: state.metric });
        if seen.len() >= 4 {
            seen.remove(0); // the links moved on from it
        }
        seen.push((dir, described));
        described
    }

    /// The run's state for the page's status.
    pub(super) fn status(&self) -> TrainingStatus {
        let points = self
            .shared
            .points
            .lock()
            .map(|points| (points.len(), points.last().cloned()))
            .unwrap_or((0, None));
        let outcome = self.shared.outcome.lock().ok().and_then(|outcome| outcome.clone());
        TrainingStatus {
            dir: self.dir.display().to_string(),
            running: self.is_running(),
            stopping: self.shared.stop.load(Ordering::Relaxed),
            points: points.0,
            episodes: self.episodes,
            last: points.1,
            best: self.describe(BEST),
            last_checkpoint: self.describe(LAST),
            outcome,
        }
    }
}
