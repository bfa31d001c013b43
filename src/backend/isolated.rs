//! Probes in a child process, so that a driver that aborts, crashes, hangs or makes the dynamic
//! linker end the process takes only the child down.
//!
//! The child is this same executable run as `<exe> __atheria-probe <candidate>`: it runs the
//! in-process probe (pre-checks, then a tiny computation) and prints one JSON line. The parent
//! reads it, or classifies how the child ended: its exit code, its signal, the linker's text on
//! its stderr, or the timeout after which it was killed. Each candidate is probed once per
//! process.
//!
//! A program that embeds the crate opts in with one call at the top of its `main`:
//!
//! ```no_run
//! // First thing in `main`: serves the probe when this process is a probe child (and exits),
//! // and otherwise turns on isolated probes for `select_device` and `probe_all`.
//! atheria::backend::isolated::serve_probe_subcommand();
//! // ... the program ...
//! ```
//!
//! Without it, probes run in-process (pre-checks and `catch_unwind` only). A program whose
//! executable cannot serve the subcommand (a Python interpreter that loaded the engine as an
//! extension module) names its own probe child with [`enable_with_command`], and that child
//! answers with [`probe_report`].

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{classify_failure, Attempt, BackendKind, Candidate, Failure, FailureCause};

/// The hidden subcommand that makes a process a probe child.
pub const PROBE_SUBCOMMAND: &str = "__atheria-probe";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The probe child's program and its leading arguments, when not this executable.
static COMMAND: Mutex<Option<(PathBuf, Vec<String>)>> = Mutex::new(None);

/// Results of isolated probes, by candidate.
static PROBED: Mutex<Option<HashMap<String, Attempt>>> = Mutex::new(None);

/// Serves the probe when this process was started as a probe child (prints the result and
/// exits), and otherwise enables isolated probes for this process. Call it first in `main`,
/// before any thread starts.
pub fn serve_probe_subcommand() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(PROBE_SUBCOMMAND) {
        ENABLED.store(true, Ordering::Relaxed);
        return;
    }
    let rest: Vec<String> = args.collect();
    println!("{}", probe_report(&rest));
    std::process::exit(0);
}

/// Enables isolated probes with `program` (and `args` before the probe's own) as the probe
/// child: it must call [`probe_report`] with the arguments after `args` and print the line
/// it returns. The Python package runs `python -m atheria._probe`.
pub fn enable_with_command(program: PathBuf, args: Vec<String>) {
    if let Ok(mut command) = COMMAND.lock() {
        *command = Some((program, args));
    }
    ENABLED.store(true, Ordering::Relaxed);
}

/// The probe child's work: `args` are what follows the subcommand (the candidate, then the
/// timeout in seconds); returns the JSON line the parent reads.
pub fn probe_report(args: &[String]) -> String {
    let spec = args.first().cloned().unwrap_or_default();
    let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let attempt = match Candidate::from_spec(&spec) {
        Some(candidate) => candidate.probe(Duration::from_secs(seconds)).0,
        None => Attempt::failed(
            BackendKind::Cpu,
            spec.clone(),
            FailureCause::Other,
            format!("unknown probe `{spec}`"),
        ),
    };
    serde_json::to_string(&attempt).unwrap_or_default()
}

/// True when [`serve_probe_subcommand`] enabled isolated probes in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The result of probing `candidate` in a child process (cached for the process).
pub(crate) fn probe(candidate: &Candidate, timeout: Duration) -> Attempt {
    let spec = candidate.spec();
    if let Some(found) = PROBED.lock().ok().and_then(|cache| cache.as_ref()?.get(&spec).cloned()) {
        return found;
    }
    let attempt = run_child(candidate, &spec, timeout);
    if let Ok(mut cache) = PROBED.lock() {
        cache.get_or_insert_with(HashMap::new).insert(spec, attempt.clone());
    }
    attempt
}

fn run_child(candidate: &Candidate, spec: &str, timeout: Duration) -> Attempt {
    let (backend, device) = (candidate.kind(), candidate.label());
    let fail = |cause, summary: String, messages: Vec<String>| Attempt {
        backend,
        device: device.clone(),
        failure: Some(Failure { cause, summary, messages }),
        driver: Default::default(),
    };
    let configured = COMMAND.lock().ok().and_then(|command| command.clone());
    let (program, leading) = match configured {
        Some(command) => command,
        None => match std::env::current_exe() {
            Ok(exe) => (exe, Vec::new()),
            Err(error) => {
                return fail(
                    FailureCause::Other,
                    format!("cannot find this executable to probe in a child: {error}"),
                    vec![],
                )
            }
        },
    };
    let child = Command::new(program)
        .args(leading)
        .arg(PROBE_SUBCOMMAND)
        .arg(spec)
        .arg(timeout.as_secs().max(1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            return fail(FailureCause::Other, format!("cannot start the probe process: {error}"), vec![])
        }
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    // The child's own probe has the same limit; this one also covers a driver that blocks
    // before that timer starts. A little slack lets the child report its own timeout.
    let deadline = Instant::now() + timeout + Duration::from_secs(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                return fail(FailureCause::Other, format!("lost the probe process: {error}"), vec![])
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let messages: Vec<String> =
        stderr.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let Some(status) = status else {
        let summary =
            format!("the driver did not answer within {} s; the probe was stopped", timeout.as_secs());
        return fail(FailureCause::Timeout, summary, messages);
    };
    if let Some(attempt) = stdout.lines().rev().find_map(|line| serde_json::from_str::<Attempt>(line).ok()) {
        return attempt;
    }
    // The child ended without its report: the linker, an abort or a signal stopped it.
    if let Some(line) =
        messages.iter().find(|m| m.contains("symbol lookup error") || m.contains("undefined symbol"))
    {
        return fail(FailureCause::LibraryMismatch, line.clone(), messages.clone());
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        let name = signal_name(signal);
        let said =
            messages.iter().find(|m| !m.starts_with("note:")).map(|m| format!(": {m}")).unwrap_or_default();
        return fail(
            FailureCause::DriverCrashed,
            format!("the driver ended the probe with {name}{said}"),
            messages.clone(),
        );
    }
    let cause = classify_failure(&messages);
    let first = messages.first().cloned().unwrap_or_else(|| "no message".into());
    fail(cause, format!("the probe exited with {status} ({first})"), messages)
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        4 => "SIGILL (illegal instruction)",
        6 => "SIGABRT (abort)",
        7 => "SIGBUS (bus error)",
        8 => "SIGFPE (arithmetic fault)",
        9 => "SIGKILL",
        11 => "SIGSEGV (segmentation fault)",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}
