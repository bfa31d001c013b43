//! Stopping at a step boundary: SIGINT (Ctrl-C) and SIGTERM (`kill`, a job scheduler) set a
//! flag that long loops poll between steps, so that they stop cleanly and write what was asked
//! instead of dying with it unwritten.
//!
//! The library never installs handlers by itself (an embedding program may have its own): the
//! `atheria` binary calls [`install`] once. Without it [`pending`] is always `None` and the
//! default disposition applies. After [`install`], a second signal of either kind ends the
//! process at once with the conventional status (130 for SIGINT, 143 for SIGTERM).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A signal that asks the program to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    /// SIGINT (Ctrl-C in a terminal).
    Interrupt,
    /// SIGTERM (`kill PID`, a scheduler stopping the job).
    Terminate,
}

impl StopSignal {
    /// The shell's exit status for a program stopped by this signal: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// Where a loop stopped because of a signal: after `step` of `of` steps (or episodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Interruption {
    /// The signal received.
    pub signal: StopSignal,
    /// The step (or episode) count reached when the loop stopped.
    pub step: u64,
    /// The count the loop was asked to reach.
    pub of: u64,
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.of == 0 {
            // Work without a count (the live lab's server).
            return write!(f, "stopped by {}", self.signal.name());
        }
        write!(f, "interrupted at step {} of {} ({})", self.step, self.of, self.signal.name())
    }
}

struct Flags {
    /// The raw signal number of the first stop request, 0 while none arrived.
    signal: Arc<AtomicUsize>,
    /// Set by the first request; a second one with it set exits at once.
    requested: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the SIGINT and SIGTERM handlers (once per process; later calls do nothing).
#[cfg(unix)]
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags { signal: Arc::new(AtomicUsize::new(0)), requested: Arc::new(AtomicBool::new(false)) };
    for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Registered first, so it sees the flag as the previous signal left it: a second
        // request exits immediately, the first only records itself.
        signal_hook::flag::register_conditional_shutdown(signal, status, Arc::clone(&flags.requested))?;
        signal_hook::flag::register_usize(signal, Arc::clone(&flags.signal), signal as usize)?;
        signal_hook::flag::register(signal, Arc::clone(&flags.requested))?;
    }
    let _ = FLAGS.set(flags);
    Ok(())
}

/// Without Unix signals there is nothing to install; Ctrl-C keeps its default effect.
#[cfg(not(unix))]
pub fn install() -> std::io::Result<()> {
    Ok(())
}

/// The stop request received so far, if any. Cheap: loops call it every step.
pub fn pending() -> Option<StopSignal> {
    let flags = FLAGS.get()?;
    match flags.signal.load(Ordering::Relaxed) {
        0 => None,
        #[cfg(unix)]
        number if number == signal_hook::consts::SIGTERM as usize => Some(StopSignal::Terminate),
        _ => Some(StopSignal::Interrupt),
    }
}

/// `Some(Interruption)` when a stop was requested, describing a stop after `step` of `of`.
pub fn check(step: u64, of: u64) -> Option<Interruption> {
    pending().map(|signal| Interruption { signal, step, of })
}
