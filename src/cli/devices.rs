//! `atheria devices`: the probe report for every compiled backend.

use atheria::backend::{probe_all, SelectOptions};
use atheria::kernels::isa::CpuKernels;
use clap::Args;

use super::common::print_captured;

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn devices(args: DevicesArgs, verbose: bool) -> anyhow::Result<()> {
    let attempts = probe_all(&SelectOptions::default());
    let cpu = CpuKernels::current();
    if args.json {
        let report = serde_json::json!({ "attempts": attempts, "cpu_kernels": cpu });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for attempt in &attempts {
        match &attempt.failure {
            None => println!("{:<5} ok      {}", attempt.backend, attempt.device),
            Some(failure) => println!(
                "{:<5} failed  {}: {} ({})",
                attempt.backend, attempt.device, failure.cause, failure.summary
            ),
        }
    }
    for attempt in &attempts {
        for broken in &attempt.driver.broken_icds {
            println!(
                "      left out the broken Vulkan driver {} ({}): {}",
                broken.manifest, broken.library, broken.error
            );
        }
    }
    println!("cpu kernels: {cpu}");
    if verbose {
        print_captured(&attempts);
    }
    Ok(())
}
