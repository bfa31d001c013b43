//! The measures on constructed universes of two channels, 32x32, each ranked as the module's
//! documentation says.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{measure, DensityFrame, LifeMeasures};

const SIDE: usize = 32;

/// A frame whose channel-0 density at (row, column) is `p0`, channel 1 the rest.
fn frame(mut p0: impl FnMut(usize, usize) -> f32) -> DensityFrame {
    let cells = SIDE * SIDE;
    let mut densities = vec![0.0; 2 * cells];
    for row in 0..SIDE {
        for column in 0..SIDE {
            let value = p0(row, column);
            densities[row * SIDE + column] = value;
            densities[cells + row * SIDE + column] = 1.0 - value;
        }
    }
    DensityFrame { height: SIDE, width: SIDE, channels: 2, densities }
}

fn frozen_stripes() -> LifeMeasures {
    let stripes = frame(|_, column| if column / 4 % 2 == 0 { 0.9 } else { 0.1 });
    measure(&vec![stripes; 24])
}

fn white_noise() -> LifeMeasures {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let frames: Vec<DensityFrame> = (0..24).map(|_| frame(|_, _| rng.gen::<f32>())).collect();
    measure(&frames)
}

/// Stripes of period 12 moving one cell a step: no period up to 8.
fn travelling_wave() -> LifeMeasures {
    let frames: Vec<DensityFrame> = (0..24)
        .map(|t| {
            frame(move |_, column| {
                let phase = 2.0 * std::f32::consts::PI * (column as f32 - t as f32) / 12.0;
                0.5 + 0.45 * phase.sin()
            })
        })
        .collect();
    measure(&frames)
}

/// A checkerboard whose cells swap their channels every step.
fn blinker() -> LifeMeasures {
    let frames: Vec<DensityFrame> = (0..24)
        .map(|t| frame(move |row, column| if (row / 4 + column / 4 + t) % 2 == 0 { 0.9 } else { 0.1 }))
        .collect();
    measure(&frames)
}

/// A disc of channel 0 whose radius grows by half a cell a step.
fn growing_disc() -> LifeMeasures {
    let frames: Vec<DensityFrame> = (0..16)
        .map(|t| {
            let radius = 3.0 + 0.5 * t as f32;
            frame(move |row, column| {
                let (y, x) = (row as f32 - 15.5, column as f32 - 15.5);
                if (x * x + y * y).sqrt() < radius {
                    0.9
                } else {
                    0.2
                }
            })
        })
        .collect();
    measure(&frames)
}

#[test]
fn a_frozen_universe_is_still_periodic_and_scores_zero() {
    let frozen = frozen_stripes();
    assert_eq!(frozen.activity, 0.0);
    assert_eq!(frozen.period, Some(1));
    assert_eq!(frozen.persistence, 1.0);
    assert!(frozen.structure > 0.5, "{frozen:?}");
    assert_eq!(frozen.score, 0.0);
}

#[test]
fn white_noise_is_active_but_unstructured_and_fleeting() {
    let noise = white_noise();
    assert!((noise.activity - 1.0 / 3.0).abs() < 0.03, "{noise:?}");
    assert!(noise.structure < 0.1, "{noise:?}");
    assert!(noise.persistence < 0.2, "{noise:?}");
    assert_eq!(noise.period, None);
    assert!(noise.score < 0.01, "{noise:?}");
}

#[test]
fn a_blinker_is_caught_by_its_period() {
    let blinker = blinker();
    assert!(blinker.activity > 0.5, "{blinker:?}");
    assert_eq!(blinker.period, Some(2));
    assert_eq!(blinker.score, 0.0);
}

#[test]
fn moving_and_growing_structures_score_above_the_rest() {
    let (wave, disc) = (travelling_wave(), growing_disc());
    for alive in [wave, disc] {
        assert!(alive.activity > 0.0 && alive.period.is_none(), "{alive:?}");
        assert!(alive.persistence > 0.8, "{alive:?}");
        assert!(alive.structure > 0.3, "{alive:?}");
    }
    let dead = [frozen_stripes(), white_noise(), blinker()];
    let best_dead = dead.iter().map(|measures| measures.score).fold(0.0, f64::max);
    assert!(disc.score > 2.0 * best_dead + 0.1, "{disc:?} vs {best_dead}");
    assert!(wave.score > disc.score, "a moving pattern changes more cells: {wave:?} vs {disc:?}");
}
