//! Training checkpoints that survive a crash at any instant.
//!
//! ```text
//! OUT/checkpoints/episode_00000100/   config.json, model.mpk   (a model directory `run` loads)
//!                                     optimizer.mpk            (AdamW moments, burn record)
//!                                     trainer.json             (episode, schedule, metrics)
//! OUT/last -> checkpoints/episode_...  the newest complete checkpoint
//! OUT/best -> checkpoints/episode_...  the lowest combined metric so far
//! ```
//!
//! A checkpoint is written into a hidden temporary directory, flushed, and renamed to its final
//! name; only then do the `last`/`best` links move, each by renaming a new link over the old
//! one. Every rename is atomic, so a reader (or a resumed run) always finds complete
//! checkpoints behind both links. Leftover temporary directories from a killed run are removed
//! when training starts.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schedule::ReduceOnPlateau;
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// Checkpoints, one directory per episode, inside the run's directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The link to the newest checkpoint.
pub const LAST: &str = "last";
/// The link to the checkpoint with the best metric.
pub const BEST: &str = "best";
/// AdamW's moments, inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";
/// The schedule, episode and metrics, inside a checkpoint.
pub const TRAINER_FILE: &str = "trainer.json";

/// Everything besides the weights that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The configuration the run was started with.
    pub config: TrainConfig,
    /// Episodes completed; the next episode to run. Each episode's randomness comes from a
    /// generator seeded with (seed, episode), so this is also the random stream's position.
    pub episode: u64,
    /// The learning-rate schedule.
    pub schedule: ReduceOnPlateau,
    /// Metrics of the last completed episode.
    pub metrics: Vec<(String, f64)>,
    /// The metric the best checkpoint is chosen by (lower is better).
    #[serde(with = "super::schedule::infinity_as_null")]
    pub metric: f64,
    /// Kept checkpoints: (episode, metric).
    pub kept: Vec<(u64, f64)>,
    /// Seconds spent training, summed over resumed runs.
    pub seconds: f64,
}

/// The directory name of the checkpoint after `episode` episodes.
pub fn checkpoint_name(episode: u64) -> String {
    format!("episode_{episode:08}")
}

/// Writes the files of a checkpoint with `write_files`, then publishes it atomically and moves
/// the `last` (and, if `is_best`, `best`) links to it.
pub fn publish(
    out: &Path,
    episode: u64,
    is_best: bool,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = out.join(CHECKPOINTS_DIR);
    fs::create_dir_all(&root).map_err(|error| Error::io(&root, error))?;
    let name = checkpoint_name(episode);
    let target = root.join(&name);
    let temporary = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&temporary);
    fs::create_dir_all(&temporary).map_err(|error| Error::io(&temporary, error))?;
    write_files(&temporary)?;
    pause_for_fault_injection();
    if target.exists() {
        // Re-publishing the same episode (a resumed run that stopped right after it).
        fs::remove_dir_all(&target).map_err(|error| Error::io(&target, error))?;
    }
    fs::rename(&temporary, &target).map_err(|error| Error::io(&target, error))?;
    sync_dir(&root);
    let relative = Path::new(CHECKPOINTS_DIR).join(&name);
    point(out, LAST, &relative)?;
    if is_best {
        point(out, BEST, &relative)?;
    }
    Ok(target)
}

/// Tests kill a training process between writing a checkpoint and publishing it; this pause
/// (milliseconds from `ATHERIA_FAULT_PAUSE_MS`, off unless set) makes that instant reachable.
fn pause_for_fault_injection() {
    if let Some(ms) = std::env::var("ATHERIA_FAULT_PAUSE_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Makes `out/NAME` point at `relative` (a directory inside `out`), replacing it atomically.
fn point(out: &Path, name: &str, relative: &Path) -> Result<()> {
    let link = out.join(name);
    let temporary = out.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    #[cfg(unix)]
    std::os::unix::fs::symlink(relative, &temporary).map_err(|error| Error::io(&temporary, error))?;
    #[cfg(not(unix))]
    {
        // Without symlinks, a pointer file names the checkpoint (read by `resolve`).
        write_atomic(&temporary, relative.to_string_lossy().as_bytes())?;
    }
    fs::rename(&temporary, &link).map_err(|error| Error::io(&link, error))?;
    sync_dir(out);
    Ok(())
}

/// The checkpoint directory behind `out/NAME`, if it exists.
pub fn resolve(out: &Path, name: &str) -> Option<PathBuf> {
    let link = out.join(name);
    let target =
        if cfg!(unix) { link.canonicalize().ok()? } else { out.join(fs::read_to_string(&link).ok()?.trim()) };
    target.is_dir().then_some(target)
}

fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Removes temporary directories and links left by a killed run.
pub fn clean_leftovers(out: &Path) {
    for dir in [out.to_path_buf(), out.join(CHECKPOINTS_DIR)] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let path = entry.path();
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
    }
}

/// Keeps the `keep_best` lowest-metric and the `keep_last` newest checkpoints (and whatever
/// `last` and `best` point at); deletes the rest. Returns what is kept.
pub fn prune(out: &Path, kept: &[(u64, f64)], keep_best: usize, keep_last: usize) -> Vec<(u64, f64)> {
    let mut by_episode = kept.to_vec();
    by_episode.sort_by_key(|(episode, _)| std::cmp::Reverse(*episode));
    let mut by_metric = kept.to_vec();
    by_metric.sort_by(|a, b| a.1.total_cmp(&b.1));
    let protected: Vec<PathBuf> = [LAST, BEST].iter().filter_map(|name| resolve(out, name)).collect();
    let mut keep: Vec<(u64, f64)> = Vec::new();
    for entry in by_episode.iter().take(keep_last.max(1)).chain(by_metric.iter().take(keep_best.max(1))) {
        if !keep.iter().any(|(episode, _)| *episode == entry.0) {
            keep.push(*entry);
        }
    }
    for (episode, metric) in kept {
        let path = out.join(CHECKPOINTS_DIR).join(checkpoint_name(*episode));
        let is_protected = path.canonicalize().is_ok_and(|p| protected.contains(&p));
        if keep.iter().any(|(e, _)| e == episode) {
            continue;
        }
        if is_protected {
            keep.push((*episode, *metric));
            continue;
        }
        let _ = fs::remove_dir_all(&path);
    }
    keep.sort_by_key(|(episode, _)| *episode);
    keep
}

/// Writes `trainer.json` into a checkpoint directory.
pub fn write_state(dir: &Path, state: &TrainerState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state)
        .map_err(|error| Error::format(dir.join(TRAINER_FILE), error.to_string()))?;
    write_atomic(&dir.join(TRAINER_FILE), &bytes)
}

/// Reads `trainer.json` from a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(TRAINER_FILE);
    let bytes = fs::read(&path).map_err(|error| Error::io(&path, error))?;
    serde_json::from_slice(&bytes)
        .map_err(|error| Error::format(&path, format!("invalid trainer state: {error}")))
}
