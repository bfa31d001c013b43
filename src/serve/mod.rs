//! `atheria serve`: the live lab. One process serves the page (plain files compiled in) and a
//! WebSocket, and runs the simulation on its own thread on the selected backend.
//!
//! ```text
//! browser  --HTTP--> /            the page (web/index.html, app.js, style.css)
//!          <--WS-->  /ws          JSON commands in; JSON messages and binary frames out
//!          --HTTP--> /snapshots   state files and GIFs out, uploads in
//! server   thread    simulation   commands between steps, frames into a watch channel
//!          tasks     one per client: the newest frame and status, its replies
//! ```
//!
//! The protocol is in `docs/protocol.md` and [`protocol`].

mod frames;
mod http;
mod messages;
pub mod protocol;
mod training;
mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use tokio::sync::watch;

use crate::app::SparseRunOptions;
use crate::backend::{select_device, BackendJob, DeviceReport, DeviceRequest, SelectOptions};
use crate::error::{Error, Result};
use crate::interrupt::Interruption;
use crate::io::model_dir::ModelSource;
use crate::kernels::EngineBackend;
use crate::state::InitialState;
use messages::{Hello, Outgoing, Published};
use protocol::Command;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The law.
    pub model: ModelSource,
    /// Where to run it.
    pub device: DeviceRequest,
    /// Fail instead of falling back when the device cannot start.
    pub strict_device: bool,
    /// The grid (dense) or the window (sparse); 64x64 by default.
    pub grid: Option<(usize, usize)>,
    /// Universes stepped together.
    pub batch: usize,
    /// Seed of the initial state.
    pub seed: u64,
    /// The initial state; random by default.
    pub init: Option<InitialState>,
    /// The decay rate; the model's by default.
    pub gamma: Option<f64>,
    /// Serve a sparse universe instead of a dense grid.
    pub sparse: Option<SparseRunOptions>,
    /// The address to listen on.
    pub bind: SocketAddr,
    /// A secret the page and the WebSocket must present (required off loopback).
    pub token: Option<String>,
    /// Where snapshots, uploads and recordings go.
    pub snapshots: PathBuf,
    /// Where training runs started from the page go.
    pub runs: PathBuf,
    /// Frames kept for rewinding (bounded by 512 MiB of states).
    pub history: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            model: ModelSource::Default,
            device: DeviceRequest::Auto,
            strict_device: false,
            grid: None,
            batch: 1,
            seed: 0,
            init: None,
            gamma: None,
            sparse: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            snapshots: PathBuf::from("snapshots"),
            runs: PathBuf::from("runs"),
            history: 64,
        }
    }
}

/// A command and where its answer goes.
pub(crate) struct Request {
    command: Command,
    reply: tokio::sync::mpsc::Sender<Reply>,
}

/// A message for one client: the answer to one of its commands, or a notice that answers none
/// (a recording finished or cut short).
pub(crate) struct Reply {
    text: String,
    answers_command: bool,
}

impl Reply {
    fn answer(text: String) -> Self {
        Self { text, answers_command: true }
    }

    fn notice(text: String) -> Self {
        Self { text, answers_command: false }
    }
}

/// What the simulation publishes.
pub(crate) struct Outputs {
    frames: watch::Sender<Option<Arc<Vec<u8>>>>,
    status: watch::Sender<Option<Arc<Published>>>,
}

/// What the web tasks share with the simulation.
pub(crate) struct Hub {
    requests: std::sync::mpsc::Sender<Request>,
    frames: watch::Receiver<Option<Arc<Vec<u8>>>>,
    /// The newest status (none before the world's first).
    status: watch::Receiver<Option<Arc<Published>>>,
    clients: AtomicUsize,
    shutdown: AtomicBool,
    /// Messages for every client: the failures the simulation recovered from.
    notices: tokio::sync::broadcast::Sender<String>,
    /// Why the simulation thread has stopped, once it has (the status then says so).
    stopped: std::sync::Mutex<Option<String>>,
    /// The `hello` message every client gets first.
    hello: String,
    options: ServeOptions,
}

impl Hub {
    /// The newest status, told truly: once the simulation thread has stopped, the last status
    /// it published says so.
    fn status_text(&self) -> String {
        let Some(newest) = self.status.borrow().clone() else {
            return "{}".into();
        };
        let stopped = self.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match stopped {
            Some(cause) => Outgoing::Status(Box::new(newest.status.clone().stopped(cause))).text(),
            None => newest.text.clone(),
        }
    }
}

/// Where the server listens, once it does.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The address (with the port the system chose for port 0).
    pub address: SocketAddr,
    /// The page's URL, with the token.
    pub url: String,
    /// How the device was chosen.
    pub device: DeviceReport,
}

/// Checks the options that can be checked before anything starts.
fn check(options: &ServeOptions) -> Result<()> {
    if !options.bind.ip().is_loopback() && options.token.is_none() {
        return Err(Error::InvalidRun(format!(
            "binding to {} opens the lab to the network: give --token SECRET as well (the page then asks for it)",
            options.bind
        )));
    }
    if let Some(token) = &options.token {
        if token.len() < 8 || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::InvalidRun("the token must be 8 or more letters, digits, '-' or '_'".into()));
        }
    }
    if options.batch == 0 || options.batch > protocol::MAX_BATCH {
        return Err(Error::InvalidRun(format!("batch must be between 1 and {}", protocol::MAX_BATCH)));
    }
    for dir in [&options.snapshots, &options.runs] {
        std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
    }
    Ok(())
}

/// The simulation thread's job: build the world on the selected device, say hello, run.
struct WorldJob {
    options: ServeOptions,
    requests: std::sync::mpsc::Receiver<Request>,
    outputs: Outputs,
    ready: std::sync::mpsc::Sender<Result<String>>,
    hub: std::sync::mpsc::Receiver<Arc<Hub>>,
}

impl BackendJob for WorldJob {
    type Output = ();

    fn run<B: EngineBackend>(self, device: B::Device) {
        let world = world::World::<B>::new(self.options, device);
        let world = match world {
            Ok(world) => world,
            Err(error) => {
                let _ = self.ready.send(Err(error));
                return;
            }
        };
        let _ = self.ready.send(Ok(world.model_description()));
        if let Ok(hub) = self.hub.recv() {
            // The world recovers from its own failures; this catches what it could not.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                world.run(self.requests, self.outputs, hub.clone())
            }));
            if !hub.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
                let cause = match ran {
                    Ok(()) => "the simulation stopped".to_string(),
                    Err(payload) => {
                        format!("the simulation stopped: {}", crate::guard::panic_text(payload.as_ref()))
                    }
                };
                tracing::error!("{cause}");
                let _ = hub.notices.send(Outgoing::error(None, cause.clone()).text());
                *hub.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cause);
            }
        }
    }
}

/// Serves until a signal (SIGINT, SIGTERM) stops it; `on_listening` learns the address first.
/// A training run started from the page is stopped with a checkpoint before this returns.
pub fn serve(options: ServeOptions, on_listening: &dyn Fn(&Listening)) -> Result<Option<Interruption>> {
    check(&options)?;
    let selection = select_device(
        options.device,
        &SelectOptions { strict: options.strict_device, ..SelectOptions::from_environment()? },
    )?;
    let (requests, requests_rx) = std::sync::mpsc::channel();
    let (frames_tx, frames_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(None);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (hub_tx, hub_rx) = std::sync::mpsc::channel();
    let job = WorldJob {
        options: options.clone(),
        requests: requests_rx,
        outputs: Outputs { frames: frames_tx, status: status_tx },
        ready: ready_tx,
        hub: hub_rx,
    };
    let device = selection.device.clone();
    let simulation = std::thread::Builder::new()
        .name("atheria-simulation".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.run(job)));
            if let Err(payload) = outcome {
                tracing::error!("the simulation stopped: {}", crate::guard::panic_text(payload.as_ref()));
            }
        })
        .map_err(|error| Error::DeviceUnavailable(format!("cannot start the simulation thread: {error}")))?;
    let description = ready_rx
        .recv()
        .map_err(|_| Error::DeviceUnavailable("the simulation stopped while starting".into()))??;
    let hello = Outgoing::Hello(Box::new(Hello::new(
        description,
        selection.report.summary(),
        options.sparse.is_some(),
    )))
    .text();
    let hub = Arc::new(Hub {
        requests,
        frames: frames_rx,
        status: status_rx,
        clients: AtomicUsize::new(0),
        shutdown: AtomicBool::new(false),
        notices: tokio::sync::broadcast::channel(16).0,
        stopped: std::sync::Mutex::new(None),
        hello,
        options,
    });
    let _ = hub_tx.send(hub.clone());
    let served = http::run(hub.clone(), &selection.report, on_listening);
    hub.shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = simulation.join();
    served
}
