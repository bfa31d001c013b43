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

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
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
