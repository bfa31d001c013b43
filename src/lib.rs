//! # atheria
//!
//! A tensor engine for learned quantum cellular automata on [burn]. A complex state grid psi
//! evolves under a learned operator, the law M: `delta = M(psi)`, optionally `delta * psi`,
//! minus the decay `gamma * psi`, an Euler update, then per-cell renormalisation. The dynamics
//! are written once, generic over burn's backend, and run on CUDA, wgpu or the CPU, chosen at
//! runtime by a guarded constructor that falls back instead of crashing.
//!
//! ```no_run
//! use atheria::backend::{select_device, DeviceRequest, SelectOptions};
//!
//! let selection = select_device(DeviceRequest::Auto, &SelectOptions::default()).unwrap();
//! println!("{}", selection.report);
//! ```

pub mod app;
pub mod backend;
pub mod complex;
pub mod dynamics;
pub mod error;
mod guard;
pub mod interrupt;
pub mod io;
pub mod kernels;
pub mod memory;
pub mod models;
pub mod names;
pub mod noise;
pub mod observables;
pub mod plot;
pub mod readback;
pub mod render;
pub mod serve;
pub mod session;
pub mod sparse;
pub mod state;
pub mod tools;
pub mod training;

pub use backend::{select_device, BackendJob, DeviceReport, DeviceRequest, SelectOptions, SelectedDevice};
pub use dynamics::{step, Simulation, StepOutput};
pub use error::{Error, ErrorFamily, Result};
pub use guard::panic_text;
pub use kernels::EngineBackend;
pub use models::{Architecture, Law, Model, ModelConfig};
pub use state::{InitialState, Universe};
pub use tools::{ScheduledTool, Tool};
