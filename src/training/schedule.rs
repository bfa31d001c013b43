//! Schedules: the noise curriculum and the learning rate's reduce-on-plateau.

use serde::{Deserialize, Serialize};

/// Noise level of an episode: `min(max_noise, max_noise * episode / ramp)`.
pub fn noise_level(max_noise: f64, ramp_episodes: u64, episode: u64) -> f64 {
    if ramp_episodes == 0 {
        return max_noise;
    }
    (max_noise * episode as f64 / ramp_episodes as f64).min(max_noise)
}

/// Halves (by `factor`) the learning rate when the smoothed loss has not improved by a
/// relative `threshold` for `patience` episodes. The per-episode loss is noisy (every episode
/// starts from a new random universe), so the plateau is judged on an exponential moving
/// average of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceOnPlateau {
    /// The factor the rate is multiplied by on a plateau.
    pub factor: f64,
    /// Episodes without improvement before a reduction.
    pub patience: u64,
    /// The relative improvement that counts.
    pub threshold: f64,
    /// The rate is never reduced below this.
    pub min_lr: f64,
    /// Smoothing of the loss: `average = (1 - smoothing) * average + smoothing * loss`.
    pub smoothing: f64,
    /// The current learning rate.
    pub lr: f64,
    /// The smoothed loss; `None` before the first episode.
    pub average: Option<f64>,
    /// The best smoothed loss so far.
    #[serde(with = "infinity_as_null")]
    pub best: f64,
    /// Episodes since it improved.
    pub episodes_without_improvement: u64,
    /// Episodes at which the rate was reduced.
    pub reductions: Vec<u64>,
}

impl ReduceOnPlateau {
    /// A schedule starting at `lr`.
    pub fn new(lr: f64, factor: f64, patience: u64, min_lr: f64) -> Self {
        Self {
            factor,
            patience,
            threshold: 1e-4,
            min_lr,
            smoothing: 0.05,
            lr,
            average: None,
            best: f64::INFINITY,
            episodes_without_improvement: 0,
            reductions: vec![],
        }
    }

    /// Records an episode's loss; returns the learning rate for the next episode.
    pub fn step(&mut self, episode: u64, loss: f64) -> f64 {
        if !loss.is_finite() {
            return self.lr;
        }
        let average = match self.average {
            Some(average) => (1.0 - self.smoothing) * average + self.smoothing * loss,
            None => loss,
        };
        self.average = Some(average);
        // Relative improvement on the magnitude, so that negative losses behave too.
        // The first average always counts as an improvement (inf - inf would be NaN).
        if !self.best.is_finite() || average < self.best - self.threshold * self.best.abs() {
            self.best = average;
            self.episodes_without_improvement = 0;
        } else {
            self.episodes_without_improvement += 1;
            if self.episodes_without_improvement > self.patience && self.lr > self.min_lr {
                self.lr = (self.lr * self.factor).max(self.min_lr);
                self.episodes_without_improvement = 0;
                self.reductions.push(episode);
            }
        }
        self.lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_ramps_up_then_saturates() {
        assert_eq!(noise_level(0.05, 2000, 0), 0.0);
        assert!((noise_level(0.05, 2000, 1000) - 0.025).abs() < 1e-12);
        assert_eq!(noise_level(0.05, 2000, 5000), 0.05);
    }

    #[test]
    fn plateau_halves_the_rate_after_patience() {
        let mut schedule = ReduceOnPlateau::new(1e-3, 0.5, 3, 1e-5);
        for episode in 0..10 {
            schedule.step(episode, 10.0 - episode as f64);
        }
        assert_eq!(schedule.lr, 1e-3, "improving loss keeps the rate");
        let start = 10;
        for episode in start..start + 4 {
            schedule.step(episode, 100.0);
        }
        assert_eq!(schedule.lr, 5e-4);
        assert_eq!(schedule.reductions, vec![start + 3]);
        for episode in 20..200 {
            schedule.step(episode, 100.0);
        }
        assert_eq!(schedule.lr, 1e-5, "never below the minimum");
    }
}

/// JSON has no infinity: "no best value yet" (+inf) is written as null and read back as +inf.
pub(crate) mod infinity_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::INFINITY))
    }
}
