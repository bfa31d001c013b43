//! The sparse engine: its vacuum, its conversions, its equivalence with the dense step, its
//! memory, and `atheria run --sparse`.

use atheria::dynamics::step;
use atheria::kernels::EngineBackend;
use atheria::models::{Architecture, Model};
use atheria::sparse::{halo, MatterSeed, Region, SparseConfig, SparseUniverse, Vacuum};
use atheria::state::{generate, InitialState, Universe};
use burn::backend::{NdArray, Wgpu};
use burn::tensor::module::max_pool2d;
use burn::tensor::Tensor;

use crate::support::{assert_fails_with, atheria, scratch, stderr, to_vec, trajectory, wgpu_device};

fn config(tile: usize, threshold: f64) -> SparseConfig {
    SparseConfig { tile, threshold, vacuum_seed: 11, ..SparseConfig::default() }
}

/// A random normalised grid [1, 2d, height, width].
fn random_grid<B: EngineBackend>(
    d: usize,
    height: usize,
    width: usize,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let host = generate(&InitialState::Random, 1, height, width, d, seed).unwrap();
    Universe::<B>::from_host(&host, device).psi
}

fn max_difference<B: EngineBackend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a).iter().zip(to_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A model with PyTorch fixture weights, whose learned term is large (see make_fixtures.py).
fn fixture_model<B: EngineBackend>(arch: Architecture, device: &B::Device) -> Model<B> {
    let fixture = trajectory(arch);
    Model::from_weights(fixture.config, &fixture.weights, device).unwrap()
}

#[test]
fn the_vacuum_is_the_same_wherever_and_whenever_it_is_asked_for() {
    let device = Default::default();
    let universe = SparseUniverse::<NdArray>::new(config(8, 0.01), 3, &device).unwrap();
    let again = SparseUniverse::<NdArray>::new(config(8, 0.01), 3, &device).unwrap();
    let region = Region::new(-13, 5, 21, 10);
    // Gathered from whole tiles, or generated for the region alone: the same cells.
    let gathered = to_vec(universe.to_dense(region).unwrap());
    assert_eq!(gathered, universe.vacuum().host(region, 0));
    assert_eq!(gathered, to_vec(again.to_dense(region).unwrap()));
    // An overlapping region agrees on the overlap: cell (-3, 9) is at (10, 4) and (0, 0).
    let inner = Region::new(-3, 9, 4, 4);
    let inner_values = universe.vacuum().host(inner, 0);
    let cells = region.cells();
    for channel in 0..6 {
        assert_eq!(gathered[channel * cells + 4 * 21 + 10], inner_values[channel * 16]);
    }
    // Another seed or another step is another vacuum.
    let other = Vacuum { seed: 12, ..*universe.vacuum() };
    assert_ne!(other.host(region, 0), gathered);
    assert_ne!(universe.vacuum().host(region, 1), gathered);
}

#[test]
fn dense_grids_round_trip_exactly_at_any_origin() {
    let device = Default::default();
    let mut universe = SparseUniverse::<NdArray>::new(config(8, 0.01), 2, &device).unwrap();
    let grid = random_grid::<NdArray>(2, 13, 19, 4, &device);
    universe.from_dense(grid.clone(), -11, 6).unwrap();
    // Columns -11..8 and rows 6..19 touch tiles -2..=0 across and 0..=2 down.
    assert_eq!(universe.stored_tiles(), 9);
    // Matter, counted here on the host: channel densities off 1/d by more than 0.01 in L1.
    let values = to_vec(grid.clone());
    let cells = 13 * 19;
    let matter = (0..cells)
        .filter(|&cell| {
            let density =
                |c: usize| values[c * cells + cell].powi(2) + values[(2 + c) * cells + cell].powi(2);
            (density(0) - 0.5).abs() + (density(1) - 0.5).abs() > 0.01
        })
        .count();
    assert!(matter > cells * 9 / 10, "most random cells are matter: {matter}");
    assert_eq!(universe.matter_cells(), matter);
    assert_eq!(to_vec(universe.to_dense(Region::new(-11, 6, 19, 13)).unwrap()), to_vec(grid.clone()));

    // Around the grid the vacuum is untouched.
    let around = Region::new(-16, 0, 32, 24);
    let dense = to_vec(universe.to_dense(around).unwrap());
    let vacuum = universe.vacuum().host(around, 0);
    let cells = around.cells();
    for y in 0..24 {
        for x in 0..32 {
            let inside = (6..19).contains(&y) && (5..24).contains(&x);
            for channel in 0..4 {
                let index = channel * cells + y * 32 + x;
                if !inside {
                    assert_eq!(dense[index], vacuum[index], "cell ({x}, {y})");
                }
            }
        }
    }

    // Writing the vacuum back over it leaves nothing stored.
    let region = Region::new(-16, 0, 24, 24);
    let vacuum_grid = universe.vacuum().tensor::<NdArray>(region, 0, &device);
    universe.from_dense(vacuum_grid, region.x, region.y).unwrap();
    assert_eq!(universe.stored_tiles(), 0);
    assert!(universe.from_dense(random_grid::<NdArray>(3, 4, 4, 1, &device), 0, 0).is_err());
}

/// The MLP acts on each cell alone: a region evolves exactly as the same dense grid.
fn mlp_region_matches_the_dense_step<B: EngineBackend>(device: &B::Device, tolerance: f32) {
    let model = fixture_model::<B>(Architecture::Mlp, device);
    let mut universe = SparseUniverse::<B>::new(config(8, 0.01), 3, device).unwrap();
    let region = Region::new(-5, 3, 24, 16);
    universe.from_dense(random_grid::<B>(3, 16, 24, 2, device), region.x, region.y).unwrap();
    let before = universe.to_dense(region).unwrap();
    let report = universe.step(&model, 0.05).unwrap();
    assert_eq!(report.step, 1);
    // 4 x 3 tiles touch the region; each has 8 neighbours.
    assert_eq!(report.evolved_tiles, 6 * 5);
    let dense = step(&model, 0.05, before, None).psi;
    let error = max_difference(universe.to_dense(region).unwrap(), dense);
    assert!(error <= tolerance, "sparse and dense steps differ by {error}");
}

/// The U-Net: every tile evolves exactly as a dense grid of its window (the tile and a halo
/// of the receptive radius, read from its neighbours and the vacuum).
fn unet_tiles_match_the_dense_step_of_their_windows<B: EngineBackend>(device: &B::Device, tolerance: f32) {
    let model = fixture_model::<B>(Architecture::Unet, device);
    let (tile, halo) = (16, halo(Architecture::Unet));
    assert_eq!(halo, 32);
    // A threshold this low keeps every evolved tile, so that all of them can be compared.
    let mut universe = SparseUniverse::<B>::new(config(tile, 1e-9), 3, device).unwrap();
    universe.from_dense(random_grid::<B>(3, 16, 32, 3, device), 0, 0).unwrap();
    assert_eq!(universe.stored_tiles(), 2);
    // Everything the step reads, as one dense grid at step 0.
    let reach = Region::new(-(5 * tile as i64), -(5 * tile as i64), 12 * tile, 11 * tile);
    let before = universe.to_dense(reach).unwrap();
    let report = universe.step(&model, 0.05).unwrap();
    // Matter reaches ceil(31 / 16) = 2 tiles: (2 + 4) x (1 + 4) tiles evolve.
    assert_eq!(report.evolved_tiles, 6 * 5);
    assert_eq!(report.stored_tiles, 6 * 5);
    for (i, j) in [(0, 0), (1, 0), (-1, 0), (2, 1), (0, -2), (3, 2), (-2, 2)] {
        let (x, y) = (i * tile as i64, j * tile as i64);
        let (left, top) = ((x - halo as i64 - reach.x) as usize, (y - halo as i64 - reach.y) as usize);
        let window = before.clone().narrow(2, top, tile + 2 * halo).narrow(3, left, tile + 2 * halo);
        let dense = step(&model, 0.05, window, None).psi;
        let expected = dense.narrow(2, halo, tile).narrow(3, halo, tile);
        let sparse = universe.to_dense(Region::new(x, y, tile, tile)).unwrap();
        let error = max_difference(sparse, expected);
        assert!(error <= tolerance, "tile ({i}, {j}): sparse and dense differ by {error}");
    }
}

#[test]
fn mlp_region_matches_the_dense_step_on_the_cpu() {
    mlp_region_matches_the_dense_step::<NdArray>(&Default::default(), 1e-6);
}

#[test]
fn mlp_region_matches_the_dense_step_on_wgpu() {
    mlp_region_matches_the_dense_step::<Wgpu>(&wgpu_device(), 1e-5);
}

#[test]
fn unet_tiles_match_the_dense_step_of_their_windows_on_the_cpu() {
    unet_tiles_match_the_dense_step_of_their_windows::<NdArray>(&Default::default(), 1e-5);
}

#[test]
fn unet_tiles_match_the_dense_step_of_their_windows_on_wgpu() {
    unet_tiles_match_the_dense_step_of_their_windows::<Wgpu>(&wgpu_device(), 1e-4);
}

#[test]
fn vacuum_neighbours_of_matter_are_dropped_when_they_stay_vacuum() {
    let device = Default::default();
    // An untrained law barely moves anything (its output layer starts near zero).
    let config_ = atheria::ModelConfig::new(Architecture::Unet, 2, 4);
    let model = Model::<NdArray>::seeded(config_, 0, &device).unwrap();
    let mut universe = SparseUniverse::<NdArray>::new(config(32, 0.01), 2, &device).unwrap();
    universe.seed_matter(&[MatterSeed { x: 16, y: 16, radius: 6.0 }], 0).unwrap();
    assert_eq!(universe.stored_coords(), vec![(0, 0)]);
    let matter = universe.matter_cells();
    assert!((100..=120).contains(&matter), "a disc of radius 6 has 113 cells, {matter} are matter");
    let report = universe.step(&model, 0.01).unwrap();
    // The receptive radius (31) is within one tile: the tile and its 8 neighbours evolve.
    assert_eq!(report.evolved_tiles, 9);
    assert_eq!(universe.stored_coords(), vec![(0, 0)]);
    assert_eq!(report.matter_cells, matter);
}

#[test]
fn memory_grows_with_matter_not_with_the_extent_of_the_universe() {
    let device = Default::default();
    // An untrained U-Net leaves the vacuum vacuum, so only the blobs hold matter.
    let model =
        Model::<NdArray>::seeded(atheria::ModelConfig::new(Architecture::Unet, 3, 4), 0, &device).unwrap();
    let run = |seeds: &[MatterSeed]| {
        let mut universe = SparseUniverse::<NdArray>::new(config(32, 0.01), 3, &device).unwrap();
        universe.seed_matter(seeds, 0).unwrap();
        for _ in 0..2 {
            universe.step(&model, 0.01).unwrap();
        }
        universe
    };
    let near = MatterSeed { x: 0, y: 0, radius: 10.0 };
    let far = MatterSeed { x: 1_000_000, y: -1_000_000, radius: 10.0 };
    let (one, other, both) = (run(&[near]), run(&[far]), run(&[near, far]));
    assert!(one.stored_tiles() > 0 && other.stored_tiles() > 0);
    assert_eq!(both.stored_tiles(), one.stored_tiles() + other.stored_tiles());
    assert_eq!(both.stored_bytes(), one.stored_bytes() + other.stored_bytes());
    assert_eq!(both.matter_cells(), one.matter_cells() + other.matter_cells());
    let bounds = both.bounds().unwrap();
    assert!(bounds.width > 1_000_000 && bounds.height > 1_000_000, "{bounds}");
    // Each blob of radius 10 touches at most 4 tiles of 32, whatever lies between them.
    assert!(both.stored_bytes() <= 8 * 6 * 32 * 32 * 4, "{} bytes", both.stored_bytes());
}

/// The support of one output cell, propagated through the U-Net's layer graph with max
/// operations (a 3x3 convolution dilates by one cell at its resolution).
fn support_radius(memory: bool, offset: usize) -> usize {
    type B = NdArray;
    let device = Default::default();
    let side = 128;
    let mut data = vec![0.0f32; side * side];
    let centre = 60 + offset;
    data[centre * side + centre] = 1.0;
    let point = Tensor::<B, 1>::from_floats(data.as_slice(), &device).reshape([1, 1, side, side]);
    let conv = |m: Tensor<B, 4>| max_pool2d(m, [3, 3], [1, 1], [1, 1], [1, 1], false);
    let block = |m: Tensor<B, 4>| conv(conv(m));
    let pool = |m: Tensor<B, 4>| max_pool2d(m, [2, 2], [2, 2], [0, 0], [1, 1], false);
    let up = |m: Tensor<B, 4>| {
        let [_, _, h, w] = m.dims();
        m.reshape([1, 1, h, 1, w, 1]).expand([1, 1, h, 2, w, 2]).reshape([1, 1, 2 * h, 2 * w])
    };
    let x1 = block(point);
    let x2 = block(pool(x1.clone()));
    let mut x3 = block(pool(x2.clone()));
    if memory {
        x3 = conv(x3);
    }
    let x4 = block(x3);
    let u1 = block(up(x4).max_pair(x2));
    let u2 = block(up(u1).max_pair(x1));
    let values = to_vec(u2);
    let mut radius = 0;
    for y in 0..side {
        for x in 0..side {
            if values[y * side + x] > 0.0 {
                radius = radius.max(y.abs_diff(centre)).max(x.abs_diff(centre));
            }
        }
    }
    radius
}

#[test]
fn the_receptive_radius_is_the_reach_of_the_layer_graph() {
    for (arch, memory) in [(Architecture::Unet, false), (Architecture::UnetConvlstm, true)] {
        // The worst alignment of the cell with the pooling grid.
        let measured = (0..4).map(|offset| support_radius(memory, offset)).max().unwrap();
        assert_eq!(measured, arch.receptive_radius(), "{arch}");
    }
    assert_eq!(Architecture::Mlp.receptive_radius(), 0);
}

#[test]
fn the_sparse_engine_refuses_what_it_cannot_run() {
    let device = Default::default();
    assert!(SparseUniverse::<NdArray>::new(config(30, 0.01), 2, &device).is_err());
    assert!(SparseUniverse::<NdArray>::new(config(32, 0.0), 2, &device).is_err());
    let mut universe = SparseUniverse::<NdArray>::new(config(32, 0.01), 2, &device).unwrap();
    let lstm =
        Model::<NdArray>::seeded(atheria::ModelConfig::new(Architecture::UnetConvlstm, 2, 4), 0, &device)
            .unwrap();
    assert!(universe.step(&lstm, 0.01).unwrap_err().to_string().contains("memory"));
    let other =
        Model::<NdArray>::seeded(atheria::ModelConfig::new(Architecture::Mlp, 3, 4), 0, &device).unwrap();
    assert!(universe.step(&other, 0.01).is_err());
    assert!(universe.to_dense(Region::new(0, 0, 1 << 14, 1 << 14)).is_err());
    assert!(universe.to_dense(Region::new(i64::MAX - 4, 0, 8, 8)).is_err());
}

#[test]
fn cli_runs_a_sparse_universe_with_two_distant_blobs() {
    let dir = scratch("cli-sparse");
    let (frames, metrics) = (dir.join("frames"), dir.join("sparse.csv"));
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--sparse",
        "--arch",
        "mlp",
        "--d-state",
        "4",
        "--hidden",
        "8",
        "--tile",
        "16",
        "--seed-matter",
        "-3,0,5;1000000,0,5",
        "--steps",
        "3",
        "--every",
        "3",
        "--window",
        "-16,-16,32x32",
        "--view",
        "density,phase",
        "--frames",
        frames.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("ran 3 sparse steps of mlp d4 h8"), "{text}");
    assert!(text.contains("step 3: "), "{text}");
    let csv = std::fs::read_to_string(&metrics).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "step,evolved_tiles,stored_tiles,matter_cells");
    assert_eq!(rows.len(), 5, "{csv}");
    // Each disc of radius 5 (81 cells) touches the 4 tiles around its centre.
    assert_eq!(rows[1], "0,0,8,162");
    for name in ["frame_000000.png", "frame_000003.png"] {
        let image = image::open(frames.join(name)).unwrap();
        assert!(image.width() > 32, "{name}");
    }

    assert_fails_with(&["run", "--device", "cpu", "--sparse", "--tile", "30"], "multiple of 4");
    assert_fails_with(&["run", "--device", "cpu", "--sparse", "--seed-matter", "1,2"], "x,y,radius");
    assert_fails_with(&["run", "--device", "cpu", "--sparse", "--window", "0,0,0x4"], "empty");
    assert_fails_with(&["run", "--device", "cpu", "--sparse", "--batch", "2"], "--batch");
    assert_fails_with(&["run", "--device", "cpu", "--sparse", "--view", "energy"], "energy");
    let output = atheria(&["run", "--device", "cpu", "--tile", "16"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--sparse"), "{}", stderr(&output));
}
