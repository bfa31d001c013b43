//! Tools: each against an independent computation (hand-derived properties, or the NumPy
//! fixture for the deterministic phase imprints), normalisation, seeding and parameter errors.

use std::f64::consts::{PI, TAU};

use atheria::state::{generate, InitialState, Universe};
use atheria::tools::{click_out_pairs, Tool};
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

use crate::support::{assert_close, to_vec, Fixture};

type B = NdArray;

/// A random normalised state [batch, 2d, height, width].
pub fn random_state(batch: usize, height: usize, width: usize, d: usize, seed: u64) -> Tensor<B, 4> {
    let host = generate(&InitialState::Random, batch, height, width, d, seed).unwrap();
    Universe::<B>::from_host(&host, &Default::default()).psi
}

/// Host view of a state: value(b, c, y, x) with c over the 2d real channels.
struct Host {
    dims: [usize; 4],
    data: Vec<f32>,
}

impl Host {
    fn new(psi: Tensor<B, 4>) -> Self {
        Self { dims: psi.dims(), data: to_vec(psi) }
    }

    fn d(&self) -> usize {
        self.dims[1] / 2
    }

    fn at(&self, b: usize, c: usize, y: usize, x: usize) -> f32 {
        let [_, channels, height, width] = self.dims;
        self.data[((b * channels + c) * height + y) * width + x]
    }

    /// Channel `c` of a cell as a complex number (re, im).
    fn complex(&self, b: usize, c: usize, y: usize, x: usize) -> (f64, f64) {
        (self.at(b, c, y, x) as f64, self.at(b, self.d() + c, y, x) as f64)
    }

    fn cell(&self, b: usize, y: usize, x: usize) -> Vec<f32> {
        (0..self.dims[1]).map(|c| self.at(b, c, y, x)).collect()
    }

    fn norm(&self, b: usize, y: usize, x: usize) -> f64 {
        self.cell(b, y, x).iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
    }
}

fn assert_normalised(psi: &Tensor<B, 4>, what: &str) {
    let host = Host::new(psi.clone());
    let [batch, _, height, width] = host.dims;
    for b in 0..batch {
        for y in 0..height {
            for x in 0..width {
                let norm = host.norm(b, y, x);
                assert!((norm - 1.0).abs() < 1e-5, "{what}: cell ({b}, {y}, {x}) has norm {norm}");
            }
        }
    }
}

pub fn tool(spec: &str) -> Tool {
    spec.parse().unwrap_or_else(|error| panic!("{spec}: {error}"))
}

/// The phase of new/old for channel 0 of a cell: the factor a phase imprint multiplied by.
fn factor_phase(old: &Host, new: &Host, y: usize, x: usize) -> f64 {
    let (a_re, a_im) = old.complex(0, 0, y, x);
    let (b_re, b_im) = new.complex(0, 0, y, x);
    // b / a = b conj(a) / |a|^2
    (b_im * a_re - b_re * a_im).atan2(b_re * a_re + b_im * a_im)
}

/// Total phase change of the imprinted factor around the square ring of cells at Chebyshev
/// distance `r` from (cx, cy), walked counter-clockwise in (x, y) coordinates.
fn winding(old: &Host, new: &Host, cx: usize, cy: usize, r: usize) -> f64 {
    let (cx, cy, r) = (cx as i64, cy as i64, r as i64);
    let mut ring = Vec::new();
    for x in -r..r {
        ring.push((cx + x, cy - r));
    }
    for y in -r..r {
        ring.push((cx + r, cy + y));
    }
    for x in (-r + 1..=r).rev() {
        ring.push((cx + x, cy + r));
    }
    for y in (-r + 1..=r).rev() {
        ring.push((cx - r, cy + y));
    }
    let phases: Vec<f64> =
        ring.iter().map(|&(x, y)| factor_phase(old, new, y as usize, x as usize)).collect();
    let mut total = 0.0;
    for i in 0..phases.len() {
        let step = phases[(i + 1) % phases.len()] - phases[i];
        total += (step + PI).rem_euclid(TAU) - PI;
    }
    total
}

#[test]
fn vortex_winds_the_phase_by_two_pi_m() {
    let psi = random_state(1, 24, 20, 3, 1);
    let old = Host::new(psi.clone());
    for m in [1i64, 2, 3, -1, -2] {
        let out = tool(&format!("vortex:x=9,y=11,radius=9,m={m},strength=1")).apply(psi.clone(), 0).unwrap();
        assert_normalised(&out, "vortex");
        let new = Host::new(out);
        // theta = atan2(y - y0, x - x0) grows counter-clockwise in (x, y), the ring's direction.
        for r in [1, 2, 3] {
            let turns = winding(&old, &new, 9, 11, r) / TAU;
            assert!((turns - m as f64).abs() < 1e-3, "m = {m}, ring {r}: {turns} turns");
        }
        // Outside the disc nothing changes, bit for bit.
        for y in 0..24 {
            for x in 0..20 {
                let outside = (x as f64 - 9.0).powi(2) + (y as f64 - 11.0).powi(2) > 81.0;
                if outside {
                    assert_eq!(old.cell(0, y, x), new.cell(0, y, x), "({y}, {x})");
                }
            }
        }
        // The same cell's channels all turn by the same phase, magnitudes are kept.
        for c in 0..3 {
            let (a, b) = (old.complex(0, c, 12, 10), new.complex(0, c, 12, 10));
            assert!((a.0.hypot(a.1) - b.0.hypot(b.1)).abs() < 1e-6);
        }
    }
}

#[test]
fn vortex_of_strength_zero_leaves_the_state() {
    let psi = random_state(2, 16, 16, 2, 3);
    let out = tool("vortex:x=8,y=8,radius=4,m=2,strength=0").apply(psi.clone(), 0).unwrap();
    assert_eq!(to_vec(out), to_vec(psi));
}

#[test]
fn phase_imprints_match_numpy() {
    let fixture = Fixture::load("observables.safetensors");
    let unit = fixture.state::<B>("unit", &Default::default());
    for name in ["vortex", "wave"] {
        let spec = &fixture.metadata[name];
        let out = tool(spec).apply(unit.clone(), 0).unwrap();
        assert_close(spec, &to_vec(out), fixture.values(name), 1e-6);
    }
}

#[test]
fn a_full_wave_is_a_momentum_kick() {
    let psi = random_state(2, 8, 12, 3, 5);
    let (kx, ky) = (0.9, -0.35);
    let out = tool(&format!("wave:kx={kx},ky={ky},amplitude=1")).apply(psi.clone(), 0).unwrap();
    assert_normalised(&out, "wave");
    let (old, new) = (Host::new(psi), Host::new(out));
    for b in 0..2 {
        for y in 0..8 {
            for x in 0..12 {
                let angle = kx * x as f64 + ky * y as f64;
                for c in 0..3 {
                    let (re, im) = old.complex(b, c, y, x);
                    let expected = (re * angle.cos() - im * angle.sin(), re * angle.sin() + im * angle.cos());
                    let got = new.complex(b, c, y, x);
                    assert!((got.0 - expected.0).abs() < 1e-6 && (got.1 - expected.1).abs() < 1e-6);
                }
            }
        }
    }
    let unchanged =
        tool("wave:kx=1,ky=1,amplitude=0").apply(Tensor::<B, 4>::ones([1, 2, 3, 3], &Default::default()), 0);
    assert_eq!(to_vec(unchanged.unwrap()), vec![1.0; 18]);
}

fn inside(x: usize, y: usize, (cx, cy, r): (f64, f64, f64)) -> bool {
    (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2) <= r * r
}

#[test]
fn collapse_honours_centre_and_intensity() {
    let (height, width, d) = (16, 20, 4);
    let psi = random_state(2, height, width, d, 7);
    let old = Host::new(psi.clone());
    // An off-centre disc on a non-square grid: swapping x and y would be caught.
    let disc = (5.0, 9.0, 3.0);

    let zero = tool("collapse:x=5,y=9,radius=3,intensity=0,seed=4").apply(psi.clone(), 0).unwrap();
    assert_eq!(to_vec(zero), old.data);

    let full = tool("collapse:x=5,y=9,radius=3,intensity=1,seed=4").apply(psi.clone(), 0).unwrap();
    assert_normalised(&full, "collapse");
    let new = Host::new(full);
    let mut collapsed = 0;
    for b in 0..2 {
        for y in 0..height {
            for x in 0..width {
                if !inside(x, y, disc) {
                    assert_eq!(old.cell(b, y, x), new.cell(b, y, x), "outside ({x}, {y}) changed");
                    continue;
                }
                collapsed += 1;
                // A basis state: one channel carries everything, with its old phase.
                let occupied: Vec<usize> = (0..d)
                    .filter(|&c| {
                        let (re, im) = new.complex(b, c, y, x);
                        re.hypot(im) > 1e-6
                    })
                    .collect();
                assert_eq!(occupied.len(), 1, "({x}, {y}) keeps {occupied:?}");
                let k = occupied[0];
                let (re, im) = new.complex(b, k, y, x);
                let (old_re, old_im) = old.complex(b, k, y, x);
                let scale = old_re.hypot(old_im);
                assert!((re - old_re / scale).abs() < 1e-5 && (im - old_im / scale).abs() < 1e-5);
            }
        }
    }
    assert_eq!(collapsed, 2 * 29, "cells within distance 3 of a cell centre");
}

#[test]
fn partial_collapse_blends_toward_a_measured_channel() {
    let d = 3;
    let psi = random_state(1, 6, 6, d, 11);
    let old = Host::new(psi.clone());
    let intensity = 0.4;
    let out = tool(&format!("collapse:x=2,y=3,radius=2,intensity={intensity},seed=1")).apply(psi, 0).unwrap();
    assert_normalised(&out, "partial collapse");
    let new = Host::new(out);
    for y in 0..6 {
        for x in 0..6 {
            if !inside(x, y, (2.0, 3.0, 2.0)) {
                continue;
            }
            // The result must be normalise((1 - I) psi + I e_k psi_k / |psi_k|) for some k.
            let matches = (0..d).any(|k| {
                let mut blend: Vec<(f64, f64)> = (0..d)
                    .map(|c| {
                        let (re, im) = old.complex(0, c, y, x);
                        ((1.0 - intensity) * re, (1.0 - intensity) * im)
                    })
                    .collect();
                let (re, im) = old.complex(0, k, y, x);
                let magnitude = re.hypot(im);
                blend[k].0 += intensity * re / magnitude;
                blend[k].1 += intensity * im / magnitude;
                let norm = blend.iter().map(|(a, b)| a * a + b * b).sum::<f64>().sqrt();
                (0..d).all(|c| {
                    let got = new.complex(0, c, y, x);
                    (got.0 - blend[c].0 / norm).abs() < 1e-5 && (got.1 - blend[c].1 / norm).abs() < 1e-5
                })
            });
            assert!(matches, "({x}, {y}) is not a blend toward any basis state");
        }
    }
}

#[test]
fn collapse_follows_the_born_rule() {
    // Every cell has p = (0.5, 0.3, 0.2) with assorted phases; a disc covering the grid.
    let (batch, side, p) = (2, 32, [0.5f64, 0.3, 0.2]);
    let cells = batch * side * side;
    let mut data = vec![0.0f32; cells * 6];
    let plane = side * side;
    for b in 0..batch {
        for cell in 0..plane {
            for c in 0..3 {
                let angle = (cell * 7 + c * 3 + b) as f64 * 0.37;
                data[(b * 6 + c) * plane + cell] = (p[c].sqrt() * angle.cos()) as f32;
                data[(b * 6 + 3 + c) * plane + cell] = (p[c].sqrt() * angle.sin()) as f32;
            }
        }
    }
    let psi = Tensor::<B, 4>::from_data(TensorData::new(data, [batch, 6, side, side]), &Default::default());
    let out = Host::new(tool("collapse:x=16,y=16,radius=100,intensity=1,seed=9").apply(psi, 0).unwrap());
    let mut counts = [0usize; 3];
    for b in 0..batch {
        for y in 0..side {
            for x in 0..side {
                let k = (0..3)
                    .find(|&c| {
                        let (re, im) = out.complex(b, c, y, x);
                        re.hypot(im) > 0.5
                    })
                    .unwrap();
                counts[k] += 1;
            }
        }
    }
    for c in 0..3 {
        let expected = cells as f64 * p[c];
        let sigma = (cells as f64 * p[c] * (1.0 - p[c])).sqrt();
        assert!(
            (counts[c] as f64 - expected).abs() < 5.0 * sigma,
            "channel {c}: {} of {cells}, expected {expected:.0} +- {sigma:.0}",
            counts[c]
        );
    }
}

#[test]
fn random_tools_are_seeded() {
    let psi = random_state(2, 12, 12, 3, 2);
    for spec in
        ["collapse:radius=5,intensity=0.7", "click-out:chance=1", "phase-flip:rate=0.5", "bit-flip:rate=0.5"]
    {
        let apply = |seed: u64, step: u64| {
            to_vec(tool(&format!("{spec},seed={seed}")).apply(psi.clone(), step).unwrap())
        };
        assert_eq!(apply(3, 5), apply(3, 5), "{spec}: same seed and step");
        assert_ne!(apply(3, 5), apply(4, 5), "{spec}: another seed");
        assert_ne!(apply(3, 5), apply(3, 6), "{spec}: another step");
        assert_ne!(apply(3, 5), to_vec(psi.clone()), "{spec}: did something");
    }
}

#[test]
fn click_out_swaps_disjoint_pairs_of_cells() {
    let (height, width) = (16, 12);
    let psi = random_state(2, height, width, 3, 8);
    let old = Host::new(psi.clone());
    let pairs = click_out_pairs(height, width);
    assert_eq!(pairs, 6, "floor(0.5 sqrt(192))");
    let out = tool("click-out:chance=1,seed=2").apply(psi.clone(), 1).unwrap();
    assert_normalised(&out, "click-out");
    let new = Host::new(out);
    let mut moved_per_universe = Vec::new();
    for b in 0..2 {
        let cells: Vec<(usize, usize)> = (0..height).flat_map(|y| (0..width).map(move |x| (y, x))).collect();
        let moved: Vec<(usize, usize)> =
            cells.iter().copied().filter(|&(y, x)| new.cell(b, y, x) != old.cell(b, y, x)).collect();
        // Each moved cell now holds the old content of exactly one other moved cell, which in
        // turn holds its content: a swap.
        for &(y, x) in &moved {
            let partners: Vec<&(usize, usize)> =
                moved.iter().filter(|&&(v, u)| old.cell(b, v, u) == new.cell(b, y, x)).collect();
            assert_eq!(partners.len(), 1);
            let (v, u) = *partners[0];
            assert_eq!(new.cell(b, v, u), old.cell(b, y, x));
        }
        assert_eq!(moved.len(), 2 * pairs, "universe {b}");
        moved_per_universe.push(moved);
    }
    assert_ne!(moved_per_universe[0], moved_per_universe[1], "universes draw their own pairs");

    for spec in ["click-out:chance=0", "click-out:enabled=false,chance=1"] {
        assert_eq!(to_vec(tool(spec).apply(psi.clone(), 1).unwrap()), old.data, "{spec}");
    }
    // With chance 0.3, about 30% of 400 steps click.
    let clicking = tool("click-out:chance=0.3,seed=5");
    let events =
        (0..400u64).filter(|&step| to_vec(clicking.apply(psi.clone(), step).unwrap()) != old.data).count();
    assert!((events as f64 - 120.0).abs() < 5.0 * (400.0f64 * 0.3 * 0.7).sqrt(), "{events} of 400");
}

#[test]
fn noise_tools_keep_magnitudes() {
    let psi = random_state(1, 8, 8, 4, 4);
    let old = Host::new(psi.clone());
    let flipped = tool("bit-flip:rate=1").apply(psi.clone(), 0).unwrap();
    assert_eq!(to_vec(flipped), old.data.iter().map(|v| -v).collect::<Vec<_>>());
    let rotated = tool("phase-flip:rate=1,seed=3").apply(psi.clone(), 0).unwrap();
    assert_normalised(&rotated, "phase flip");
    let new = Host::new(rotated);
    for c in 0..4 {
        let (a, b) = (old.complex(0, c, 2, 5), new.complex(0, c, 2, 5));
        assert!((a.0.hypot(a.1) - b.0.hypot(b.1)).abs() < 1e-6);
    }
    assert_eq!(to_vec(tool("phase-flip:rate=0").apply(psi, 0).unwrap()), old.data);
}

#[test]
fn every_tool_keeps_cells_normalised() {
    let psi = random_state(2, 12, 16, 5, 6);
    for spec in [
        "vortex",
        "vortex:x=0,y=0,radius=30,m=4,strength=0.5",
        "wave:kx=1.3,ky=0.2,amplitude=0.5",
        "collapse",
        "collapse:intensity=0.5,radius=40",
        "click-out:chance=1",
        "phase-flip:rate=0.5",
        "bit-flip:rate=0.5",
    ] {
        assert_normalised(&tool(spec).apply(psi.clone(), 3).unwrap(), spec);
    }
}

/// Every tool and every view on backend `Q`, from the same host state: the outputs in order.
fn tools_and_views_on<Q: burn::tensor::backend::Backend>(device: &Q::Device) -> Vec<(String, Vec<f32>)> {
    let host = generate(&InitialState::Random, 2, 12, 16, 3, 21).unwrap();
    let psi = Universe::<Q>::from_host(&host, device).psi;
    let delta = Universe::<Q>::from_host(&generate(&InitialState::Random, 2, 12, 16, 3, 22).unwrap(), device)
        .psi
        * 0.1;
    let mut outputs = Vec::new();
    for spec in [
        "vortex:x=5,y=6,radius=5,m=2,strength=0.9",
        "wave:kx=0.5,ky=0.3,amplitude=0.7",
        "collapse:x=8,y=4,radius=4,intensity=0.6,seed=1",
        "click-out:chance=1,seed=3",
        "phase-flip:rate=0.3,seed=4",
        "bit-flip:rate=0.3,seed=5",
    ] {
        outputs.push((spec.to_string(), to_vec(tool(spec).apply(psi.clone(), 2).unwrap())));
    }
    for view in atheria::observables::View::all() {
        let map = view.map(psi.clone(), Some(psi.clone()), Some(delta.clone())).unwrap();
        outputs.push((view.name().to_string(), to_vec(map)));
    }
    outputs
}

#[test]
fn tools_and_views_agree_on_wgpu_and_the_cpu() {
    let on_cpu = tools_and_views_on::<NdArray>(&Default::default());
    let on_wgpu = tools_and_views_on::<burn::backend::Wgpu>(&crate::support::wgpu_device());
    for ((name, cpu), (_, wgpu)) in on_cpu.iter().zip(&on_wgpu) {
        if name == "phase" {
            // Angles near +-pi may land on either side.
            let wrapped: Vec<f32> = cpu
                .iter()
                .zip(wgpu)
                .map(|(a, b)| {
                    let d = (a - b).rem_euclid(std::f32::consts::TAU);
                    d.min(std::f32::consts::TAU - d)
                })
                .collect();
            assert_close(name, &wrapped, &vec![0.0; wrapped.len()], 1e-4);
        } else {
            let scale = cpu.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            assert_close(name, wgpu, cpu, 1e-4 * scale);
        }
    }
}
