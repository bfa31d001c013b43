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
//!
//! ## Map of the crate
//!
//! The engine, roughly bottom up (it never uses the programs below it):
//! - [`kernels`]: the CPU backend's own kernels (convolutions, GEMM, pooling, AdamW) behind
//!   [`EngineBackend`], and the ISA they run on;
//! - [`complex`], [`noise`]: complex arithmetic on `[B, 2d, H, W]` tensors, seeded noise;
//! - [`models`]: the laws (U-Nets, ConvLSTM, per-cell MLPs), their configs and weights;
//! - [`dynamics`]: one step (`delta = M(psi)`, decay, Euler, renormalisation) and rollouts;
//! - [`state`], [`io`]: universes and their initial states; files (states, weights, the lab's
//!   checkpoints), written through a temporary file and a rename;
//! - [`observables`], [`render`], [`plot`], [`readback`]: maps, metrics and pictures of a state,
//!   and the one counted place where tensors come back to the host;
//! - [`life`]: whether a universe is alive (activity, structure, period, persistence);
//! - [`footprint`]: the RAM a run or a training would need, checked before allocating;
//! - [`tools`]: the lab's interventions (collapse, vortex, phase imprints, ...);
//! - [`sparse`]: the sparse engine (stored tiles of matter in an unbounded universe);
//! - [`training`]: losses, optimisation, checkpoints, data-parallel peers;
//! - [`backend`]: choosing a device at runtime, probing drivers in a child process.
//!
//! The programs, thin drivers on top:
//! - [`app`]: the jobs of the command line (`run`, `train`, `eval`, `bench`, `doctor`, `import`);
//! - [`session`]: the universe a Python `Simulation` holds;
//! - [`serve`]: the live lab (HTTP and WebSocket, one supervised simulation thread).

pub mod app;
pub mod backend;
pub mod complex;
pub mod dynamics;
pub mod error;
pub mod footprint;
mod guard;
pub mod interrupt;
pub mod io;
pub mod kernels;
pub mod life;
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
