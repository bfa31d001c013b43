//! Where a run's pictures and metrics go: PNG frames, an animated GIF and a metrics CSV,
//! shared by the dense and the sparse run.
//!
//! Metrics rows are written and flushed as they happen, so that a crash loses at most the row
//! being written; the GIF is encoded when the run ends (normally or by a signal).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{Error, Result};
use crate::render::{save_png, GifRecorder};

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
