//! Memory known before it is spent: estimates of what a run, a training run or a sparse step
//! will hold at once, and the memory the machine has for it, so that an impossible request is
//! refused with a clear error instead of aborting inside the allocator.
//!
//! The estimates count every tensor one forward pass allocates as if none were freed (the
//! U-Net's blocks, skip connections, concatenations and the convolution kernels' transformed
//! copies), plus the state, the update and the host copies of the state. That is an upper
//! bound of the peak within a small factor: it refuses what cannot fit, and lets through
//! everything that fits with room to spare.

use crate::error::{Error, Result};
use crate::models::ModelConfig;

const F32: f64 = 4.0;

/// What one request needs, in bytes, and what it is (for the error message).
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// "a 40000x40000 grid with this unet d8 h16" and the like.
    pub what: String,
    /// Bytes held in host memory (the CPU backend's tensors and every host copy).
    pub host_bytes: f64,
}

/// Floats a law's forward pass allocates per cell of the grid (see the module doc).
pub fn forward_floats_per_cell(config: &ModelConfig) -> f64 {
    let h = config.hidden_channels as f64;
    let d = config.d_state as f64;
    if !config.arch.is_unet() {
        // Each hidden 1x1 convolution and its ELU (h and h), the output (2d), and for the laws
        // that read the neighbours their sums and padded copies (3 x 2d).
        let neighbours = if config.arch.reads_neighbours() { 6.0 * d } else { 0.0 };
        return 2.0 * h * config.arch.hidden_layers() as f64 + 2.0 * d + neighbours;
    }
    // Block outputs and their intermediates (conv, norm, ELU twice) at each resolution, the
    // upsampled maps and the concatenations; a quarter of the cells at H/2, 1/16 at H/4.
    let blocks = 4.0 * (h + 2.0 * h / 4.0 + 4.0 * h / 16.0 + 8.0 * h / 16.0 + 4.0 * h / 4.0 + h);
    let joins = 4.0 * h / 4.0 + 6.0 * h / 4.0 + 2.0 * h + 3.0 * h;
    let memory = if config.arch.has_memory() { 3.0 * 16.0 * h / 16.0 } else { 0.0 };
    // Winograd F(2x2, 3x3) holds 4x its input and output channels per cell transformed.
    let transforms = 4.0 * (3.0 * h + h);
    blocks + joins + memory + transforms + 2.0 * d
}

/// Floats the step's element-wise tail holds per cell: psi, the update, the next state and its
/// norm, for the unitary product its two factors' halves.
fn step_floats_per_cell(config: &ModelConfig) -> f64 {
    12.0 * config.d_state as f64
}

/// A dense run: `batch` universes of `height x width` stepped by `config`'s law; `on_host`
/// whether the backend's tensors live in host memory (the CPU backend).
pub fn dense_run(config: &ModelConfig, batch: usize, height: usize, width: usize, on_host: bool) -> Estimate {
    let cells = batch as f64 * height as f64 * width as f64;
    // The initial state is generated on the host in f64 and f32 before the upload.
    let host_state = cells * 2.0 * config.d_state as f64 * (F32 + 8.0);
    let device = cells * (forward_floats_per_cell(config) + step_floats_per_cell(config)) * F32;
    Estimate {
        what: format!(
            "{} with this {} d{} h{}",
            grids(batch, height, width),
            config.arch,
            config.d_state,
            config.hidden_channels
        ),
        host_bytes: host_state + if on_host { device } else { 0.0 },
    }
}

/// "a 64x64 grid", "4 64x64 grids".
fn grids(batch: usize, height: usize, width: usize) -> String {
    if batch == 1 {
        format!("a {height}x{width} grid")
    } else {
        format!("{batch} {height}x{width} grids")
    }
}

/// A training episode: the autodiff tape keeps every step's activations for the backward pass.
pub fn training(
    config: &ModelConfig,
    batch: usize,
    grid: usize,
    unrolled_steps: usize,
    on_host: bool,
) -> Estimate {
    let cells = batch as f64 * (grid * grid) as f64;
    let per_step = forward_floats_per_cell(config) + step_floats_per_cell(config);
    // The tape of every unrolled step, plus the backward pass's own transient gradients.
    let device = cells * per_step * (unrolled_steps as f64 + 2.0) * F32;
    let host_state = cells * 2.0 * config.d_state as f64 * (F32 + 8.0);
    Estimate {
        what: format!(
            "training on {batch} {grid}x{grid} universe(s) over {unrolled_steps} unrolled steps with this {} d{} h{}",
            config.arch, config.d_state, config.hidden_channels
        ),
        host_bytes: host_state + if on_host { device } else { 0.0 },
    }
}

/// Bytes of memory available for a new allocation: the kernel's `MemAvailable`, bounded by
/// the control group's limit where one is set (a container or a job scheduler's allocation).
/// `None` where neither can be read.
pub fn available_host_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        let line = text.lines().find(|line| line.starts_with("MemAvailable:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    });
    let cgroup = (|| {
        let limit: f64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()?;
        let used: f64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
        Some((limit - used).max(0.0))
    })();
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Refuses `estimate` when it needs more host memory than `available` bytes.
pub fn check_fits(estimate: &Estimate, available: Option<f64>, backend: &str) -> Result<()> {
    let Some(available) = available else { return Ok(()) };
    if estimate.host_bytes <= available {
        return Ok(());
    }
    Err(Error::InsufficientMemory {
        what: estimate.what.clone(),
        needed: human_bytes(estimate.host_bytes),
        available: human_bytes(available),
        backend: backend.to_string(),
    })
}

/// Checks `estimate` against this machine's available host memory.
pub fn check_host(estimate: &Estimate, backend: &str) -> Result<()> {
    check_fits(estimate, available_host_bytes(), backend)
}

/// `1.2 TB`, `22 GB`, `512 MB` (decimal units, as a user reads them off a shop's label).
pub fn human_bytes(bytes: f64) -> String {
    let units = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (name, size) in units {
        if bytes >= size {
            let value = bytes / size;
            return if value >= 10.0 { format!("{value:.0} {name}") } else { format!("{value:.1} {name}") };
        }
    }
    format!("{bytes:.0} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Architecture, ModelConfig};

    #[test]
    fn a_huge_grid_is_refused_with_both_sizes() {
        let config = ModelConfig::new(Architecture::Unet, 8, 16);
        let estimate = dense_run(&config, 1, 40_000, 40_000, true);
        let error = check_fits(&estimate, Some(22e9), "cpu").unwrap_err().to_string();
        assert!(error.contains("40000x40000"), "{error}");
        assert!(error.contains("TB") && error.contains("22 GB"), "{error}");
    }

    #[test]
    fn the_default_run_fits_in_a_small_machine() {
        let config = ModelConfig::new(Architecture::Unet, 8, 16);
        let estimate = dense_run(&config, 1, 64, 64, true);
        // 64x64 cells of a few hundred floats: a few MB, far below 1 GB.
        assert!(estimate.host_bytes < 1e8, "{}", estimate.host_bytes);
        check_fits(&estimate, Some(1e9), "cpu").unwrap();
    }

    #[test]
    fn training_grows_with_the_unrolled_steps() {
        let config = ModelConfig::new(Architecture::Mlp, 4, 8);
        let one = training(&config, 1, 32, 1, true).host_bytes;
        let sixteen = training(&config, 1, 32, 16, true).host_bytes;
        assert!(sixteen > 5.0 * one, "{one} {sixteen}");
    }

    #[test]
    fn gpu_tensors_do_not_count_against_host_memory() {
        let config = ModelConfig::new(Architecture::Unet, 8, 16);
        let host = dense_run(&config, 1, 1024, 1024, true).host_bytes;
        let gpu = dense_run(&config, 1, 1024, 1024, false).host_bytes;
        assert!(gpu * 10.0 < host, "{gpu} {host}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(1.2e12), "1.2 TB");
        assert_eq!(human_bytes(22e9), "22 GB");
        assert_eq!(human_bytes(512.0), "512 B");
    }
}
