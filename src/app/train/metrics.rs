//! The run's metrics: `metrics.csv` written as training goes, and its plot.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::plot::{plot_series, Series};
use crate::training::EpisodeReport;

/// `metrics.csv`, one row per episode, appended as training goes, and the same rows kept in
/// memory for the plot. On resume, rows of episodes after the checkpoint (run before a crash,
/// about to be run again) are dropped first.
pub(super) struct MetricsLog {
    path: PathBuf,
    file: Option<fs::File>,
    /// The columns, once known (from the file, or from the first episode).
    names: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl MetricsLog {
    pub(super) fn open(path: &Path, next_episode: u64) -> Result<Self> {
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

    pub(super) fn append(&mut self, report: &EpisodeReport, seconds: f64) -> Result<()> {
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
    pub(super) fn plot(&self, path: &Path) -> Result<()> {
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
