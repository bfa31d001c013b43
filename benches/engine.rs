//! Criterion benchmarks of the engine on every backend that starts on this machine.
//!
//! ```text
//! cargo bench --bench engine                      # everything
//! cargo bench --bench engine -- 'step/cpu'        # a filter (criterion's regex)
//! ```
//!
//! Throughput is in cells (grid cells times universes), so reports read cells/s. The device is
//! synchronised inside every timed iteration, and each configuration runs untimed first, so
//! that shader compilation and autotuning stay out of the numbers. Backends are started with
//! the guarded constructor in strict mode: one that does not start here is reported and left
//! out (CUDA on a machine without an NVIDIA driver).
//!
//! Sizes: the CPU runs grids 32 to 256 with batch 1 and 4. wgpu on a software Vulkan driver
//! (lavapipe) is about ten times slower than the CPU backend, so it runs 32 and 64 unless a
//! hardware adapter is found, and skips the sparse engine; CUDA runs everything.

// criterion_group! and criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use atheria::backend::{select_device, BackendJob, DeviceRequest, SelectOptions, SelectedDevice};
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::observables;
use atheria::sparse::{Region, SparseConfig, SparseUniverse};
use atheria::state::{generate, InitialState, Universe};
use atheria::training::loss::{self, LossKind, LossWeights};
use atheria::training::{TrainConfig, Trainer};
use atheria::{step, EngineBackend};
use burn::backend::Autodiff;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const GAMMA: f64 = 0.01;

/// The networks measured: the shipped default U-Net and a per-cell MLP.
fn laws() -> Vec<ModelConfig> {
    vec![ModelConfig::new(Architecture::Unet, 8, 16), ModelConfig::new(Architecture::Mlp, 8, 32)]
}

struct Sizes {
    grids: Vec<usize>,
    batches: Vec<usize>,
    /// Whether to measure the sparse engine (too slow for a software driver).
    sparse: bool,
}

struct EngineBenches<'a> {
    criterion: &'a mut Criterion,
    name: &'static str,
    sizes: Sizes,
}

fn sync<B: EngineBackend>(device: &B::Device) {
    B::sync(device).expect("the device failed while benchmarking");
}

impl BackendJob for EngineBenches<'_> {
    type Output = ();

    fn run<B: EngineBackend>(self, device: B::Device) {
        let Self { criterion, name, sizes } = self;

        let mut group = criterion.benchmark_group(format!("step/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for config in laws() {
            let model = Model::<B>::seeded(config.clone(), 0, &device).unwrap();
            for &batch in &sizes.batches {
                for &grid in &sizes.grids {
                    let host = generate(&InitialState::Random, batch, grid, grid, config.d_state, 1).unwrap();
                    let psi = Universe::<B>::from_host(&host, &device).psi;
                    for _ in 0..2 {
                        step(&model, GAMMA, psi.clone(), None);
                    }
                    sync::<B>(&device);
                    group.throughput(Throughput::Elements((batch * grid * grid) as u64));
                    let id = BenchmarkId::new(format!("{}/batch{batch}", config.arch), grid);
                    group.bench_function(id, |bench| {
                        bench.iter(|| {
                            let output = step(&model, GAMMA, psi.clone(), None);
                            sync::<B>(&device);
                            black_box(output.psi)
                        })
                    });
                }
            }
        }
        group.finish();

        // One training step: forward, backward through the step, clipping and AdamW, on
        // burn's autodiff over this backend (an episode of one unrolled step).
        let mut group = criterion.benchmark_group(format!("train_step/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for grid in [32, 64] {
            let config = TrainConfig {
                grid,
                qca_steps: 1,
                episodes: u64::MAX,
                max_noise: 0.0,
                ..TrainConfig::default()
            };
            let mut trainer = Trainer::<Autodiff<B>>::new(config, &device).unwrap();
            trainer.episode().unwrap();
            sync::<B>(&device);
            group.throughput(Throughput::Elements((grid * grid) as u64));
            group.bench_function(BenchmarkId::new("unet", grid), |bench| {
                bench.iter(|| {
                    let (report, _) = trainer.episode().unwrap();
                    sync::<B>(&device);
                    black_box(report.loss)
                })
            });
        }
        group.finish();

        // State initialisation (host generation and upload) and the observables.
        let mut group = criterion.benchmark_group(format!("state/{name}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let (grid, d_state) = (256, 8);
        group.throughput(Throughput::Elements((grid * grid) as u64));
        group.bench_function(BenchmarkId::new("init_random", grid), |bench| {
            bench.iter(|| {
                let host = generate(&InitialState::Random, 1, grid, grid, d_state, 3).unwrap();
                let psi = Universe::<B>::from_host(&host, &device).psi;
                sync::<B>(&device);
                black_box(psi)
            })
        });
        let host = generate(&InitialState::Random, 1, grid, grid, d_state, 3).unwrap();
        let psi = Universe::<B>::from_host(&host, &device).psi;
        let later = Universe::<B>::from_host(
            &generate(&InitialState::Random, 1, grid, grid, d_state, 4).unwrap(),
            &device,
        )
        .psi;
        group.bench_function(BenchmarkId::new("density", grid), |bench| {
            bench.iter(|| {
                let map = observables::density(psi.clone());
                sync::<B>(&device);
                black_box(map)
            })
        });
        group.bench_function(BenchmarkId::new("evolutionary_loss", grid), |bench| {
            bench.iter(|| {
                let output = loss::compute(
                    LossKind::Evolutionary,
                    &LossWeights::default(),
                    psi.clone(),
                    later.clone(),
                )
                .unwrap();
                black_box(output.values().unwrap())
            })
        });
        group.finish();

        if sizes.sparse {
            sparse_benches::<B>(criterion, name, &device);
        }
    }
}

/// The sparse engine: conversions and the vacuum at 256x256 and 1024x1024 views, and a step
/// over a 512x512 universe at several occupancies next to the dense step of the same extent
/// (throughput in universe cells, so the figures compare directly).
fn sparse_benches<B: EngineBackend>(criterion: &mut Criterion, name: &str, device: &B::Device) {
    let mut group = criterion.benchmark_group(format!("sparse/{name}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let d_state = 8;
    let config = SparseConfig { tile: 64, ..SparseConfig::default() };
    for side in [256usize, 1024] {
        let region = Region::new(-(side as i64) / 2, 17, side, side);
        let host = generate(&InitialState::Random, 1, side, side, d_state, 2).unwrap();
        let grid = Universe::<B>::from_host(&host, device).psi;
        let mut universe = SparseUniverse::<B>::new(config, d_state, device).unwrap();
        universe.from_dense(grid.clone(), region.x, region.y).unwrap();
        sync::<B>(device);
        group.throughput(Throughput::Elements((side * side) as u64));
        group.bench_function(BenchmarkId::new("to_dense", side), |bench| {
            bench.iter(|| {
                let dense = universe.to_dense(region).unwrap();
                sync::<B>(device);
                black_box(dense)
            })
        });
        group.bench_function(BenchmarkId::new("from_dense", side), |bench| {
            bench.iter(|| {
                universe.from_dense(grid.clone(), region.x, region.y).unwrap();
                sync::<B>(device);
            })
        });
        let vacuum = *universe.vacuum();
        group.bench_function(BenchmarkId::new("vacuum", side), |bench| {
            bench.iter(|| {
                let tensor = vacuum.tensor::<B>(region, 3, device);
                sync::<B>(device);
                black_box(tensor)
            })
        });
    }

    let model = Model::<B>::seeded(ModelConfig::new(Architecture::Unet, d_state, 16), 0, device).unwrap();
    let side = 512;
    group.throughput(Throughput::Elements((side * side) as u64));
    let host = generate(&InitialState::Random, 1, side, side, d_state, 4).unwrap();
    let dense = Universe::<B>::from_host(&host, device).psi;
    group.bench_function(BenchmarkId::new("dense_step_unet", side), |bench| {
        bench.iter(|| {
            let output = step(&model, GAMMA, dense.clone(), None);
            sync::<B>(device);
            black_box(output.psi)
        })
    });
    // Matter in a square block of 1, 4 or 16 of the universe's 64 tiles.
    for block in [1usize, 2, 4] {
        let mut universe = SparseUniverse::<B>::new(config, d_state, device).unwrap();
        let host = generate(&InitialState::Random, 1, 64 * block, 64 * block, d_state, 5).unwrap();
        universe.from_dense(Universe::<B>::from_host(&host, device).psi, 0, 0).unwrap();
        let id = BenchmarkId::new(format!("sparse_step_unet/{}_of_64_tiles", block * block), side);
        group.bench_function(id, |bench| {
            bench.iter_batched(
                || universe.clone(),
                |mut universe| {
                    let report = universe.step(&model, GAMMA).unwrap();
                    sync::<B>(device);
                    black_box(report)
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn engine(criterion: &mut Criterion) {
    atheria::kernels::keep_freed_memory();
    let everything = || Sizes { grids: vec![32, 64, 128, 256], batches: vec![1, 4], sparse: true };
    let strict = SelectOptions { strict: true, ..SelectOptions::default() };
    for (request, name) in [
        (DeviceRequest::Cpu, "cpu"),
        (DeviceRequest::Wgpu, "wgpu"),
        (DeviceRequest::Cuda { index: 0 }, "cuda"),
    ] {
        let selection = match select_device(request, &strict) {
            Ok(selection) => selection,
            Err(error) => {
                eprintln!("{name}: not benchmarked: {error}");
                continue;
            }
        };
        eprintln!("{name}: {}", selection.report);
        let software_wgpu = matches!(selection.device, SelectedDevice::Wgpu(_))
            && selection.report.selected_device.as_deref().unwrap_or("").to_lowercase().contains("llvmpipe");
        let sizes = if software_wgpu {
            Sizes { grids: vec![32, 64], batches: vec![1], sparse: false }
        } else {
            everything()
        };
        selection.device.run(EngineBenches { criterion, name, sizes });
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
