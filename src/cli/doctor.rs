//! `atheria doctor`: every backend, what was found, why it does not start, and a self-test of
//! those that do.

use atheria::app::doctor::{doctor as examine, PARITY_TOLERANCE};
use atheria::backend::SelectOptions;
use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let report = examine(&SelectOptions::default());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for check in &report.backends {
            let attempt = &check.attempt;
            let status = if check.healthy() {
                "ok"
            } else if attempt.failure.is_some() {
                "does not start"
            } else {
                "FAILED self-test"
            };
            println!("{:<5} {status:<16} {}", attempt.backend, attempt.device);
            let driver = &attempt.driver;
            for library in &driver.libraries {
                println!("      found {library}");
            }
            if let Some(version) = &driver.version {
                println!("      driver version {version}");
            }
            for device in &driver.devices {
                let capability = device
                    .compute_capability
                    .as_deref()
                    .map(|c| format!(", compute {c}"))
                    .unwrap_or_default();
                println!(
                    "      device {} ({:.1} GiB{capability})",
                    device.name,
                    device.memory as f64 / (1u64 << 30) as f64
                );
            }
            for broken in &driver.broken_icds {
                println!(
                    "      skipped broken Vulkan driver {} ({}): {}",
                    broken.library, broken.manifest, broken.error
                );
            }
            if let Some(failure) = &attempt.failure {
                println!("      cause: {}: {}", failure.cause, failure.summary);
            }
            if let Some(hint) = &check.hint {
                println!("      hint: {hint}");
            }
            for parity in &check.parity {
                let verdict = if parity.passed { "pass" } else { "FAIL" };
                println!(
                    "      parity {:<5} one step vs PyTorch: relative error {:.2e} ({verdict} at {PARITY_TOLERANCE:e})",
                    parity.arch, parity.relative_error
                );
            }
            if let Some(ms) = check.ms_per_step_64 {
                println!("      speed {ms:.2} ms/step (U-Net d8 h32, 64x64)");
            }
            if let Some(error) = &check.error {
                println!("      self-test error: {error}");
            }
        }
        println!("cpu kernels: {}", report.cpu_kernels);
    }
    if !report.cpu_healthy() {
        anyhow::bail!("the CPU backend failed its self-test");
    }
    Ok(())
}
