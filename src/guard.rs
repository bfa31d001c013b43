//! Catching panics from code we do not own (GPU runtimes, third-party file parsers) and turning
//! them into values, without letting the default hook print them.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

type Hook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// While alive, every panic on any thread is recorded instead of printed. Captures are
/// serialised: the panic hook is process-wide.
pub(crate) struct PanicCapture {
    messages: Arc<Mutex<Vec<String>>>,
    previous: Option<Hook>,
    _serial: MutexGuard<'static, ()>,
}

static CAPTURE_LOCK: Mutex<()> = Mutex::new(());

impl PanicCapture {
    pub(crate) fn begin() -> Self {
        let serial = CAPTURE_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let messages = Arc::new(Mutex::new(Vec::new()));
        let previous = panic::take_hook();
        let sink = Arc::clone(&messages);
        panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
            let text = panic_text(info.payload());
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
            let line = format!("{text} [thread {thread}{}]", location.unwrap_or_default());
            if let Ok(mut sink) = sink.lock() {
                sink.push(line);
            }
        }));
        Self { messages, previous: Some(previous), _serial: serial }
    }

    /// Restores the previous hook and returns what was captured.
    pub(crate) fn finish(mut self) -> Vec<String> {
        self.restore();
        let messages = self.messages.lock().map(|m| m.clone()).unwrap_or_default();
        messages
    }

    fn restore(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = panic::take_hook();
            panic::set_hook(previous);
        }
    }
}

impl Drop for PanicCapture {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Thread-name prefixes whose panics [`quiet_threads`] logs instead of printing.
static QUIET_PREFIXES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// From now until the process ends, panics on threads whose names start with one of `prefixes`
/// are logged at debug level instead of printed; other threads' panics go to the hook that was
/// there before. For threads that outlive the work that started them (burn-collective's runtime
/// is process-wide) and whose owner turns their failures into errors of its own.
pub(crate) fn quiet_threads(prefixes: &[&'static str]) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let mut quiet = QUIET_PREFIXES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for prefix in prefixes {
        if !quiet.contains(prefix) {
            quiet.push(prefix);
        }
    }
    drop(quiet);
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            let quiet = QUIET_PREFIXES.lock().map(|prefixes| prefixes.iter().any(|p| name.starts_with(p)));
            if quiet.unwrap_or(false) {
                tracing::debug!("{name}: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// The error for a panic a GPU runtime raised during work (out of device memory, a lost
/// device), with what to do about it.
pub(crate) fn gpu_failure(payload: &(dyn std::any::Any + Send)) -> crate::Error {
    let panic = panic_text(payload);
    let lower = panic.to_lowercase();
    let hint = if lower.contains("memory") || lower.contains("alloc") || lower.contains("buffer size") {
        "; the GPU ran out of memory: use a smaller grid or batch, or --device cpu"
    } else {
        "; run `atheria doctor` to check the device, or use --device cpu"
    };
    crate::Error::DeviceUnavailable(format!("the GPU failed during the run: {panic}{hint}"))
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Runs `work`; a panic becomes `Err` with its message (logged at debug level, never printed).
pub(crate) fn catch_silently<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let capture = PanicCapture::begin();
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    let messages = capture.finish();
    for message in &messages {
        tracing::debug!("caught panic: {message}");
    }
    result.map_err(|payload| panic_text(payload.as_ref()))
}
