//! The `atheria` command line: run, train, import, benchmark and inspect devices.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_headless_vulkan();
    // A probe child (this executable re-run to probe a GPU driver) answers and exits here.
    atheria::backend::isolated::serve_probe_subcommand();
    atheria::kernels::keep_freed_memory();
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    // A bad ATHERIA_SIMD or ATHERIA_PROBE_TIMEOUT is refused here, once, rather than ignored.
    let environment = atheria::kernels::isa::from_environment()
        .and_then(atheria::kernels::isa::force)
        .and_then(|()| atheria::backend::probe_timeout_from_environment().map(drop));
    if let Err(error) = environment {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    // Ctrl-C and kill stop long work at a step boundary; a second one ends it at once.
    if let Err(error) = atheria::interrupt::install() {
        tracing::warn!("cannot install the Ctrl-C handler: {error}");
    }
    match cli::dispatch(args) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(interruption)) => {
            eprintln!("{interruption}");
            ExitCode::from(interruption.signal.exit_code())
        }
        Err(error) => {
            eprintln!("error: {}", cli::one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// On a headless machine Vulkan's window-system layer prints "XDG_RUNTIME_DIR is invalid" for
/// every device probe. Pointing it at a private, reused directory silences that; nothing is
/// written there. Runs before any thread exists.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("atheria-runtime-{user}"));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if builder.create(&dir).is_err() {
        return;
    }
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
}
