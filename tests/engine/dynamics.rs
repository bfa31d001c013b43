//! Properties of the step that hold for any weights.

use atheria::complex;
use atheria::dynamics::step;
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::state::{generate, InitialState, Universe};
use atheria::{Error, Simulation};
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

use crate::support::{relative_error, to_vec};

type B = NdArray;

fn simulation(arch: Architecture, batch: usize, grid: usize, seed: u64) -> Simulation<B> {
    let device = Default::default();
    let mut config = ModelConfig::new(arch, 3, 8);
    config.hidden_channels = 8;
    let model = Model::<B>::seeded(config, seed, &device).unwrap();
    let host = generate(&InitialState::Random, batch, grid, grid, 3, seed).unwrap();
    Simulation::new(model, Universe::from_host(&host, &device), 0.01).unwrap()
}

#[test]
fn every_cell_has_unit_norm_after_a_step() {
    for arch in Architecture::all() {
        let mut sim = simulation(arch, 2, 8, 1);
        sim.step();
        let norms = to_vec(sim.universe.psi.clone().square().sum_dim(1).sqrt());
        assert_eq!(norms.len(), 2 * 8 * 8);
        for norm in norms {
            assert!((norm - 1.0).abs() < 1e-5, "{arch}: cell norm {norm}");
        }
    }
}

#[test]
fn seeded_runs_are_reproducible() {
    let run = |seed| {
        let mut sim = simulation(Architecture::UnetUnitary, 1, 8, seed);
        for _ in 0..3 {
            sim.step();
        }
        to_vec(sim.universe.psi)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn universes_in_a_batch_evolve_independently() {
    let device = Default::default();
    let config = ModelConfig::new(Architecture::UnetConvlstm, 3, 8);
    let model = Model::<B>::seeded(config, 2, &device).unwrap();
    let host = generate(&InitialState::Random, 2, 8, 8, 3, 9).unwrap();
    let batch = Universe::<B>::from_host(&host, &device);
    let mut together = Simulation::new(model.clone(), batch.clone(), 0.01).unwrap();
    together.step();
    together.step();
    for index in 0..2 {
        let single = Universe::new(batch.psi.clone().narrow(0, index, 1));
        let mut alone = Simulation::new(model.clone(), single, 0.01).unwrap();
        alone.step();
        alone.step();
        let error = relative_error(
            &to_vec(together.universe.psi.clone().narrow(0, index, 1)),
            &to_vec(alone.universe.psi),
        );
        assert!(error < 1e-6, "universe {index}: {error}");
    }
}

#[test]
fn complex_product_matches_hand_computation() {
    let device = Default::default();
    // d = 1: a = 1 + 2i, b = 3 - 1i, a*b = 3 - i + 6i + 2 = 5 + 5i.
    let a = Tensor::<B, 4>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2, 1, 1]), &device);
    let b = Tensor::<B, 4>::from_data(TensorData::new(vec![3.0f32, -1.0], [1, 2, 1, 1]), &device);
    assert_eq!(to_vec(complex::mul(a, b)), vec![5.0, 5.0]);
}

#[test]
fn decay_alone_only_rescales_before_renormalising() {
    // With the law's output at zero (outc zeroed), psi' = (1 - gamma) psi, renormalised = psi.
    let mut sim = simulation(Architecture::Mlp, 1, 4, 3);
    let atheria::Law::Mlp(mlp) = &mut sim.model.law else { unreachable!() };
    mlp.output.weight = mlp.output.weight.clone().map(|w| w.zeros_like());
    mlp.output.bias = mlp.output.bias.clone().map(|w| w.zeros_like());
    let before = to_vec(sim.universe.psi.clone());
    let output = step(&sim.model, 0.3, sim.universe.psi.clone(), None);
    let error = relative_error(&to_vec(output.psi), &before);
    assert!(error < 1e-6, "{error}");
    let delta_error =
        relative_error(&to_vec(output.delta), &before.iter().map(|v| -0.3 * v).collect::<Vec<_>>());
    assert!(delta_error < 1e-6, "{delta_error}");
}

#[test]
fn grids_the_unet_cannot_pool_are_rejected() {
    let device = Default::default();
    let model = Model::<B>::seeded(ModelConfig::new(Architecture::Unet, 3, 8), 0, &device).unwrap();
    let host = generate(&InitialState::Random, 1, 10, 12, 3, 0).unwrap();
    match Simulation::new(model, Universe::from_host(&host, &device), 0.01) {
        Err(Error::InvalidGrid { height: 10, width: 12, reason }) => {
            assert!(reason.contains("multiples of 4"), "{reason}")
        }
        other => panic!("expected InvalidGrid, got {:?}", other.map(|_| ())),
    }
    // The per-cell MLP has no such constraint.
    let mlp = Model::<B>::seeded(ModelConfig::new(Architecture::Mlp, 3, 8), 0, &device).unwrap();
    assert!(Simulation::new(mlp, Universe::from_host(&host, &device), 0.01).is_ok());
}

#[test]
fn state_and_model_must_agree_on_channels_and_gamma() {
    let device = Default::default();
    let model = Model::<B>::seeded(ModelConfig::new(Architecture::Mlp, 4, 8), 0, &device).unwrap();
    let host = generate(&InitialState::Random, 1, 8, 8, 3, 0).unwrap();
    let universe = Universe::<B>::from_host(&host, &device);
    let error = Simulation::new(model.clone(), universe.clone(), 0.01).unwrap_err();
    assert!(error.to_string().contains("d_state 3"), "{error}");
    let model3 = Model::<B>::seeded(ModelConfig::new(Architecture::Mlp, 3, 8), 0, &device).unwrap();
    for gamma in [-0.1, 1.5, f64::NAN] {
        assert!(Simulation::new(model3.clone(), universe.clone(), gamma).is_err(), "{gamma}");
    }
}
