//! Observables against an independent NumPy implementation (scripts/make_tool_fixtures.py) and
//! small hand-computed cases.

use atheria::observables::{self, step_metrics, View};
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

use crate::support::{assert_close, to_vec, Fixture};

type B = NdArray;

#[test]
fn every_view_matches_numpy() {
    let fixture = Fixture::load("observables.safetensors");
    let psi = fixture.state::<B>("psi", &Default::default());
    let input = fixture.state::<B>("input", &Default::default());
    let delta = fixture.state::<B>("delta", &Default::default());
    for view in View::all() {
        let map = view.map(psi.clone(), Some(input.clone()), Some(delta.clone())).unwrap();
        assert_eq!(map.dims(), [2, 6, 7], "{view}");
        let actual = to_vec(map);
        let expected = fixture.values(&view.name());
        if view == View::Phase {
            // Angles: compare on the circle.
            let wrapped: Vec<f32> = actual
                .iter()
                .zip(expected)
                .map(|(a, e)| {
                    let d = (a - e).rem_euclid(std::f32::consts::TAU);
                    d.min(std::f32::consts::TAU - d)
                })
                .collect();
            assert_close("phase", &wrapped, &vec![0.0; wrapped.len()], 1e-5);
        } else {
            assert_close(&view.name(), &actual, expected, 2e-5);
        }
    }
}

#[test]
fn metrics_match_numpy() {
    let fixture = Fixture::load("observables.safetensors");
    let threshold: f64 = fixture.metadata["threshold"].parse().unwrap();
    let metrics = step_metrics(
        fixture.state::<B>("psi", &Default::default()),
        Some(fixture.state::<B>("delta", &Default::default())),
        threshold,
    )
    .unwrap();
    assert_eq!(metrics.len(), 2);
    for (universe, row) in metrics.iter().enumerate() {
        assert_eq!(row.universe, universe);
        let close = |a: f64, e: f32| (a - e as f64).abs() <= 1e-4 * (1.0 + e.abs() as f64);
        assert!(close(row.total_energy, fixture.values("total_energy")[universe]), "{row:?}");
        assert!(close(row.mean_entropy, fixture.values("mean_entropy")[universe]), "{row:?}");
        assert_eq!(row.cells_above as f32, fixture.values("cells_above")[universe], "{row:?}");
    }
    // Without an update there is no energy.
    let first = step_metrics(fixture.state::<B>("psi", &Default::default()), None, threshold).unwrap();
    assert_eq!(first[0].total_energy, 0.0);
    assert!(metrics[0].total_energy > 0.0);
}

/// One cell per universe, d channels given as (re, im).
fn cells(values: &[&[(f32, f32)]]) -> Tensor<B, 4> {
    let d = values[0].len();
    let mut data = Vec::new();
    for cell in values {
        data.extend(cell.iter().map(|(re, _)| *re));
        data.extend(cell.iter().map(|(_, im)| *im));
    }
    Tensor::from_data(TensorData::new(data, [values.len(), 2 * d, 1, 1]), &Default::default())
}

#[test]
fn hand_computed_cells() {
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let basis = [(0.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.0, 0.0)];
    let uniform = [(0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5)];
    let two = [(h, 0.0), (0.0, h), (0.0, 0.0), (0.0, 0.0)];
    let zero = [(0.0, 0.0); 4];
    let psi = cells(&[&basis, &uniform, &two, &zero]);
    let entropy = to_vec(observables::entropy(psi.clone()));
    assert_close("entropy", &entropy, &[0.0, 1.0, 0.5, 0.0], 1e-6);
    let activity = to_vec(observables::channel_activity(psi.clone()));
    assert_close("activity", &activity, &[1.0, 4.0, 2.0, 0.0], 1e-5);
    let density = to_vec(observables::density(psi.clone()));
    assert_close("density", &density, &[1.0, 1.0, 1.0, 0.0], 1e-6);
    // Basis: channel 1 has phase pi/2, the zero channels count as phase 0: atan2(1/4, 3/4).
    // Two channels at 0 and pi/2 and two zero ones: atan2(1/4, 3/4) as well.
    let phase = to_vec(observables::phase(psi.clone()));
    let expected = (0.25f32).atan2(0.75);
    assert_close("phase", &phase, &[expected, 0.0, expected, 0.0], 1e-6);
    let real = to_vec(observables::real_mean(psi.clone()));
    assert_close("real", &real, &[0.0, 0.0, h / 4.0, 0.0], 1e-6);
    let imag = to_vec(observables::imag_mean(psi));
    assert_close("imag", &imag, &[0.25, 0.0, h / 4.0, 0.0], 1e-6);
}

#[test]
fn coherence_of_neighbours() {
    // A 1x3 row of one universe, d = 2: cells a, i*a (same ray up to a phase), b orthogonal to a.
    let (a, ia, b) = ([(0.6, 0.0), (0.0, 0.8)], [(0.0, 0.6), (-0.8, 0.0)], [(0.8, 0.0), (0.0, -0.6)]);
    let mut data = Vec::new();
    for channel in 0..2 {
        data.extend([a[channel].0, ia[channel].0, b[channel].0]);
    }
    for channel in 0..2 {
        data.extend([a[channel].1, ia[channel].1, b[channel].1]);
    }
    let psi = Tensor::<B, 4>::from_data(TensorData::new(data, [1, 4, 1, 3]), &Default::default());
    // a -> i a: |<a, i a>| = |a|^2 = 1. <a, b> = 0.6 * 0.8 + conj(0.8i) (-0.6i) = 0.48 - 0.48 = 0,
    // so i a -> b (<ia, b> = -i <a, b>) and b -> a (wrapping, conj <a, b>) are 0.
    let coherence = to_vec(observables::coherence(psi));
    assert_close("coherence", &coherence, &[1.0, 0.0, 0.0], 1e-6);
}

#[test]
fn spectral_of_a_plane_wave_peaks_at_its_frequency() {
    // density 1 + cos(2 pi x / 4) on an 8x8 grid: DC 64 (replaced), peaks of 32 at kx = +-2.
    let data: Vec<f32> = (0..64)
        .map(|i| (1.0 + (std::f32::consts::TAU * (i % 8) as f32 / 4.0).cos()).max(0.0).sqrt())
        .collect();
    let psi = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [1, 1, 8, 8]), &Default::default());
    let psi = Tensor::cat(vec![psi.clone(), psi.zeros_like()], 1);
    let spectrum = to_vec(observables::spectral(psi).unwrap());
    let peak = 33.0f32.ln();
    // fftshift puts frequency k at index k + 4; the peaks sit on row 4, columns 2 and 6.
    assert!((spectrum[4 * 8 + 2] - peak).abs() < 1e-4, "{}", spectrum[4 * 8 + 2]);
    assert!((spectrum[4 * 8 + 6] - peak).abs() < 1e-4);
    // DC (row 4, column 4) takes its neighbours' max, which are all ~0.
    assert!(spectrum[4 * 8 + 4] < 1e-4, "{}", spectrum[4 * 8 + 4]);
    assert!(spectrum.iter().enumerate().all(|(i, v)| i == 34 || i == 38 || *v < 1e-4));
}

#[test]
fn gradient_of_a_ramp() {
    // Density x^2 along a row of 4 (psi = x): numpy.gradient gives 1, 2, 4, 5.
    let data = vec![0.0f32, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0];
    let psi = Tensor::<B, 4>::from_data(TensorData::new(data, [1, 2, 1, 4]), &Default::default());
    let gradient = to_vec(observables::density_gradient(psi));
    assert_close("gradient", &gradient, &[1.0, 2.0, 4.0, 5.0], 1e-6);
}

#[test]
fn physics_ignores_empty_channels() {
    let psi = cells(&[&[(0.5, 0.0), (0.0, 0.0)]]);
    let delta = cells(&[&[(0.0, 0.25), (3.0, 4.0)]]);
    // channel 0: 0.25 / 0.5; channel 1 has |psi| = 0, so 0; mean 0.25.
    let map = to_vec(observables::physics(psi, delta));
    assert_close("physics", &map, &[0.25], 1e-6);
}

#[test]
fn view_names_parse_and_unknown_names_are_listed() {
    for view in View::all() {
        assert_eq!(view.name().parse::<View>().unwrap(), view);
    }
    let error = "densty".parse::<View>().unwrap_err().to_string();
    assert!(error.contains("unknown view 'densty'") && error.contains("coherence"), "{error}");
}
