//! A quick benchmark of the step, without criterion, for comparing machines and backends:
//! median time per step over several timed steps after warm-up, with the device synchronised
//! around each step.

use std::time::Instant;

use serde::Serialize;

use crate::backend::{select_device, BackendJob, DeviceReport, DeviceRequest, SelectOptions};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelSource;
use crate::kernels::EngineBackend;
use crate::models::{forward_flops, ModelConfig};
use crate::state::{generate, InitialState, Universe};
use crate::training::{TrainConfig, Trainer};
use crate::Simulation;
use burn::backend::Autodiff;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The law to measure.
    pub model: ModelSource,
    /// The devices to measure, each through the guarded constructor.
    pub devices: Vec<DeviceRequest>,
    /// Square grid sides.
    pub grids: Vec<usize>,
    /// Universes stepped together.
    pub batch: usize,
    /// Timed steps per configuration (the median is reported).
    pub steps: usize,
    /// Untimed steps first (kernel compilation, autotuning, allocator warm-up).
    pub warmup: usize,
    /// Seed of the states.
    pub seed: u64,
    /// Time a training step instead: one step forward, the evolutionary loss, backward,
    /// gradient clipping and AdamW (an episode of one unrolled step, without noise).
    pub train: bool,
    /// Fail instead of falling back when a requested device does not start.
    pub strict_device: bool,
}

/// One measured configuration; the JSON fields of `atheria bench --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRecord {
    /// The backend that ran (`cpu`, `wgpu`, `cuda`).
    pub backend: String,
    /// The device as the backend names it.
    pub device: String,
    /// The architecture measured.
    pub arch: String,
    /// Its complex channels per cell.
    pub d_state: usize,
    /// Its hidden channels.
    pub hidden: usize,
    /// The side of the square grid.
    pub grid: usize,
    /// Universes stepped together.
    pub batch: usize,
    /// `step` or `train_step`.
    pub mode: String,
    /// Median over the timed steps.
    pub ms_per_step: f64,
    /// Steps per second, from the median.
    pub steps_per_s: f64,
    /// Million cells (times universes) stepped per second.
    pub mcells_per_s: f64,
    /// Convolution arithmetic per second, counted as direct convolution (see
    /// [`crate::models::forward_flops`]); a training step counts three forwards (the backward
    /// pass computes two products per forward one).
    pub gflops: f64,
    /// Tensors read back to the host per timed step: 0 for an inference step, whose state
    /// stays on the device; a training step reads its loss terms and gradient norm.
    pub readbacks_per_step: f64,
    /// The CPU's vector paths (atheria's kernels and the GEMM) and model, beside every figure:
    /// the CPU backend's speed depends on them.
    pub cpu: crate::kernels::isa::CpuKernels,
}

/// Runs every (device, grid) configuration. `on_record` sees each result as it arrives and
/// `on_device` each device report.
pub fn bench(
    options: &BenchOptions,
    on_device: &dyn Fn(&DeviceReport),
    on_record: &dyn Fn(&BenchRecord),
) -> Result<Vec<BenchRecord>> {
    if options.steps == 0 || options.batch == 0 || options.grids.is_empty() {
        return Err(Error::InvalidRun(
            "bench needs at least one grid, one timed step and a batch of one".into(),
        ));
    }
    let mut records = Vec::new();
    'devices: for &request in &options.devices {
        let select = SelectOptions { strict: options.strict_device, ..SelectOptions::from_environment()? };
        let selection = select_device(request, &select)?;
        on_device(&selection.report);
        let device_name = selection.report.selected_device.clone().unwrap_or_default();
        for &grid in &options.grids {
            let job = BenchJob { options, grid, device_name: &device_name };
            if crate::interrupt::pending().is_some() {
                break 'devices;
            }
            // A signal during the timed steps ends them; what was measured is kept.
            if let Some(record) = super::run_guarded(&selection.device, job)? {
                on_record(&record);
                records.push(record);
            }
        }
    }
    Ok(records)
}

struct BenchJob<'a> {
    options: &'a BenchOptions,
    grid: usize,
    device_name: &'a str,
}

impl BackendJob for BenchJob<'_> {
    type Output = Result<Option<BenchRecord>>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let options = self.options;
        let model = options.model.load::<B>(&device)?;
        let config = model.config.clone();
        if options.train {
            return self.train::<B>(&config, device);
        }
        let estimate =
            crate::footprint::dense_run(&config, options.batch, self.grid, self.grid, B::tensors_on_host());
        crate::footprint::check_host(&estimate, B::engine_name())?;
        let host = generate(
            &InitialState::Random,
            options.batch,
            self.grid,
            self.grid,
            config.d_state,
            options.seed,
        )?;
        let gamma = config.gamma;
        let mut simulation = Simulation::new(model, Universe::from_host(&host, &device), gamma)?;
        let (times, readbacks) = self.time_steps::<B>(&device, || {
            simulation.step();
            Ok(())
        })?;
        Ok(self.record::<B>(&config, times, readbacks, "step", 1.0))
    }
}

impl BenchJob<'_> {
    fn train<B: EngineBackend>(
        &self,
        config: &ModelConfig,
        device: B::Device,
    ) -> Result<Option<BenchRecord>> {
        let options = self.options;
        let train_config = TrainConfig {
            arch: config.arch,
            d_state: config.d_state,
            hidden: config.hidden_channels,
            gamma: config.gamma,
            grid: self.grid,
            batch: options.batch,
            qca_steps: 1,
            max_noise: 0.0,
            episodes: u64::MAX,
            seed: options.seed,
            ..TrainConfig::default()
        };
        let estimate = crate::footprint::training(config, options.batch, self.grid, 1, B::tensors_on_host());
        crate::footprint::check_host(&estimate, B::engine_name())?;
        let mut trainer = Trainer::<Autodiff<B>>::new(train_config, &device)?;
        let (times, readbacks) = self.time_steps::<B>(&device, || trainer.episode().map(drop))?;
        Ok(self.record::<B>(config, times, readbacks, "train_step", 3.0))
    }

    /// The untimed warm-up steps, then up to `options.steps` timed ones (a signal ends them),
    /// the device synchronised around each: the seconds of each timed step, and the tensors
    /// read back during them.
    fn time_steps<B: EngineBackend>(
        &self,
        device: &B::Device,
        mut step: impl FnMut() -> Result<()>,
    ) -> Result<(Vec<f64>, u64)> {
        let sync = || B::sync(device).map_err(|error| Error::Backend(format!("{error:?}")));
        for _ in 0..self.options.warmup {
            step()?;
        }
        sync()?;
        let mut times = Vec::with_capacity(self.options.steps);
        let readbacks_before = crate::readback::count();
        for _ in 0..self.options.steps {
            if crate::interrupt::pending().is_some() {
                break;
            }
            let started = Instant::now();
            step()?;
            sync()?;
            times.push(started.elapsed().as_secs_f64());
        }
        Ok((times, crate::readback::count() - readbacks_before))
    }

    /// The record of the timed steps; `None` when a signal came before the first.
    fn record<B: EngineBackend>(
        &self,
        config: &ModelConfig,
        mut times: Vec<f64>,
        readbacks: u64,
        mode: &str,
        forwards: f64,
    ) -> Option<BenchRecord> {
        let options = self.options;
        if times.is_empty() {
            return None;
        }
        let readbacks_per_step = readbacks as f64 / times.len() as f64;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let cells = (options.batch * self.grid * self.grid) as f64;
        let flops = forwards * forward_flops(config, self.grid, self.grid) * options.batch as f64;
        Some(BenchRecord {
            backend: B::engine_name().to_string(),
            device: self.device_name.to_string(),
            arch: config.arch.to_string(),
            d_state: config.d_state,
            hidden: config.hidden_channels,
            grid: self.grid,
            batch: options.batch,
            mode: mode.to_string(),
            ms_per_step: median * 1e3,
            steps_per_s: 1.0 / median,
            mcells_per_s: cells / median / 1e6,
            gflops: flops / median / 1e9,
            readbacks_per_step,
            cpu: crate::kernels::isa::CpuKernels::current(),
        })
    }
}
