//! Where a run's pictures and metrics go: PNG frames, an animated GIF and a metrics CSV,
//! shared by the dense and the sparse run and training; and the pictures themselves.
//!
//! Metrics rows are written and flushed as they happen, so that a crash loses at most the row
//! being written; the GIF is encoded when the run ends (normally or by a signal).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::observables::{self, View};
use crate::render::{map_image, panel, save_png, GifRecorder};

/// A CSV file written row by row, each row flushed to the operating system at once.
pub struct CsvLog {
    path: PathBuf,
    file: BufWriter<fs::File>,
}

impl CsvLog {
    /// Creates (or truncates) `path` and writes the header line.
    pub fn create(path: &Path, header: &str) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|error| Error::io(parent, error))?;
        }
        let file = fs::File::create(path).map_err(|error| Error::io(path, error))?;
        let mut log = Self { path: path.to_path_buf(), file: BufWriter::new(file) };
        log.row(header)?;
        Ok(log)
    }

    /// Appends one line (without its newline) and flushes it.
    pub fn row(&mut self, line: &str) -> Result<()> {
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(|error| Error::io(&self.path, error))
    }
}

/// The frame directory, GIF and metrics of one run.
pub struct Outputs {
    frames: Option<PathBuf>,
    gif: Option<(PathBuf, GifRecorder)>,
    metrics: Option<CsvLog>,
    drawn: usize,
}

impl Outputs {
    /// Creates the frame directory and the metrics file (with `metrics_header`).
    pub fn open(
        frames: Option<&Path>,
        gif: Option<&Path>,
        metrics: Option<&Path>,
        metrics_header: &str,
    ) -> Result<Self> {
        if let Some(dir) = frames {
            fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
        }
        let metrics = metrics.map(|path| CsvLog::create(path, metrics_header)).transpose()?;
        Ok(Self {
            frames: frames.map(Path::to_path_buf),
            gif: gif.map(|path| (path.to_path_buf(), GifRecorder::new())),
            metrics,
            drawn: 0,
        })
    }

    /// Whether any picture is wanted (so that callers skip drawing otherwise).
    pub fn wants_pictures(&self) -> bool {
        self.frames.is_some() || self.gif.is_some()
    }

    /// Whether a metrics file is being written.
    pub fn wants_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// Writes the picture of the state after `step` steps: `DIR/frame_STEP.png` and a GIF frame.
    pub fn picture(&mut self, step: u64, image: RgbImage) -> Result<()> {
        if let Some(dir) = &self.frames {
            save_png(&dir.join(frame_name(step)), &image)?;
        }
        if let Some((_, gif)) = &mut self.gif {
            gif.push(image);
        }
        self.drawn += 1;
        Ok(())
    }

    /// Appends a metrics row (flushed at once).
    pub fn metrics_row(&mut self, line: &str) -> Result<()> {
        match &mut self.metrics {
            Some(log) => log.row(line),
            None => Ok(()),
        }
    }

    /// Encodes the GIF; returns the number of pictures drawn.
    pub fn finish(self) -> Result<usize> {
        if let Some((path, gif)) = self.gif {
            gif.save(&path)?;
        }
        Ok(self.drawn)
    }
}

/// `frame_000120.png`: the file of the picture after `step` steps.
pub fn frame_name(step: u64) -> String {
    format!("frame_{step:06}.png")
}

/// Writes the picture of universe 0 as `DIR/frame_STEP.png`: the default panel of views,
/// labelled (the density alone is 1 in every cell of a normalised state, so it shows nothing).
pub fn write_training_frame<B: Backend>(dir: &Path, psi: &Tensor<B, 4>, step: u64) -> Result<()> {
    let d_state = psi.dims()[1] / 2;
    let last = LastStep { input: None, delta: None };
    let image = frame_image(&View::DEFAULT_PANEL, &psi.clone().narrow(0, 0, 1), &last, step, d_state)?;
    save_png(&dir.join(frame_name(step)), &image)
}

/// The last step's input state and update (absent before the first step; the input is kept
/// only when a view needs it).
pub struct LastStep<B: Backend> {
    /// The state the last step started from, \[B, 2d, H, W\] (kept only when a view needs it).
    pub input: Option<Tensor<B, 4>>,
    /// The last step's update, \[B, 2d, H, W\].
    pub delta: Option<Tensor<B, 4>>,
}

/// The picture of universe 0 after `step` steps: one view alone (scaled up, unlabelled), or
/// several side by side with their names and the step. A map that is the same in every cell
/// says so in its label (`density: 1.000 everywhere`), drawn as a labelled panel even alone.
pub fn frame_image<B: Backend>(
    views: &[View],
    psi: &Tensor<B, 4>,
    last: &LastStep<B>,
    step: u64,
    d_state: usize,
) -> Result<image::RgbImage> {
    let [_, _, height, width] = psi.dims();
    let first = |tensor: &Tensor<B, 4>| tensor.clone().narrow(0, 0, 1);
    let mut tiles = Vec::with_capacity(views.len());
    let mut any_constant = false;
    for view in views {
        let map = view.map(first(psi), last.input.as_ref().map(first), last.delta.as_ref().map(first))?;
        let map = observables::read_floats(map)?;
        let image = map_image(&map, height, width, view.colormap(), view.range(d_state));
        let label = match constant_value(&map) {
            Some(value) => {
                any_constant = true;
                format!("{}: {value:.3} everywhere", view.name())
            }
            None => view.name().to_string(),
        };
        tiles.push((label, image));
    }
    if tiles.len() == 1 && !any_constant {
        return Ok(tiles.remove(0).1);
    }
    Ok(panel(&format!("step {step}"), &tiles))
}

/// The value of a map that is the same in every cell (within f32 rounding of its magnitude).
fn constant_value(map: &[f32]) -> Option<f32> {
    let (low, high) =
        map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = low.abs().max(high.abs()).max(1.0);
    (low.is_finite() && high - low <= 1e-5 * scale).then_some(0.5 * (low + high))
}

#[cfg(test)]
mod tests {
    use super::constant_value;

    #[test]
    fn constant_maps_are_recognised_within_rounding() {
        assert_eq!(constant_value(&[1.0; 9]), Some(1.0));
        assert!(constant_value(&[1.0, 1.0 + 2e-7, 1.0 - 2e-7]).is_some());
        assert_eq!(constant_value(&[1.0, 1.0, 0.5]), None);
        assert_eq!(constant_value(&[0.0, 1e-3]), None);
        assert_eq!(constant_value(&[f32::NAN, f32::NAN]), None);
    }
}
