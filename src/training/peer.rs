//! One trainer's place in a data-parallel run: its peer id and rank, the collective
//! operations it takes part in (burn-collective's), and the watch that lets the process give up
//! on peers that stopped answering.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::error::{Error, Result};

/// What a peer waits for while the others join.
pub const JOINING: &str = "waiting for every peer and node to join";

/// A peer of a data-parallel run: one device of one node.
#[derive(Debug, Clone)]
pub struct Peer {
    /// burn-collective's id of this peer (its global rank).
    pub id: PeerId,
    /// Its rank among all peers of all nodes: rank `r` steps universes `r*k .. (r+1)*k` of
    /// each episode's batch, where `k` is the batch over the number of peers.
    pub rank: usize,
    /// Peers of the whole run.
    pub count: usize,
    /// Where the peer reports the collective operation it waits in.
    pub watch: Arc<Watch>,
}

impl Peer {
    /// Joins the collective: returns once every peer of every node has registered.
    pub fn register<B: Backend>(&self, device: &B::Device, config: CollectiveConfig) -> Result<()> {
        self.waiting(JOINING, || collective::register::<B>(self.id, device.clone(), config))
    }

    /// The mean of every peer's gradients, in place of this peer's.
    pub fn mean_gradients<B: Backend>(&self, gradients: GradientsParams) -> Result<GradientsParams> {
        self.waiting("averaging the gradients", || gradients.all_reduce::<B>(self.id, ReduceOperation::Mean))
    }

    /// The element-wise sum (or mean) over every peer of a few numbers, the same on every peer.
    ///
    /// The values travel as f32: integers below 2^24 are summed exactly.
    pub fn reduce<B: Backend>(
        &self,
        values: &[f64],
        operation: ReduceOperation,
        device: &B::Device,
        what: &'static str,
    ) -> Result<Vec<f64>> {
        let data: Vec<f32> = values.iter().map(|&value| value as f32).collect();
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(data, [values.len()]), device);
        let reduced = self.waiting(what, || {
            collective::all_reduce::<B>(self.id, tensor.into_primitive().tensor(), operation)
        })?;
        let tensor = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(reduced));
        let host = crate::readback::floats(tensor)?;
        Ok(host.into_iter().map(f64::from).collect())
    }

    /// Leaves the collective (after the last operation of the run).
    pub fn finish<B: Backend>(&self) -> Result<()> {
        self.waiting("leaving the run", || collective::finish_collective::<B>(self.id))
    }

    /// Runs one collective operation, `what`, with the watch telling the watchdog it waits.
    fn waiting<T>(
        &self,
        what: &'static str,
        operation: impl FnOnce() -> std::result::Result<T, CollectiveError>,
    ) -> Result<T> {
        self.watch.enter(what);
        let outcome = operation();
        self.watch.leave();
        outcome.map_err(|error| collective_error(what, error))
    }
}

/// Whether, and since when, a peer waits in a collective operation: the process's watchdog
/// reads it to stop a run whose other peers stopped answering.
#[derive(Debug)]
pub struct Watch {
    started: Instant,
    /// Milliseconds since `started` at which the current wait began, plus one; 0 when not
    /// waiting.
    waiting_since: AtomicU64,
    what: Mutex<&'static str>,
}

impl Default for Watch {
    fn default() -> Self {
        Self { started: Instant::now(), waiting_since: AtomicU64::new(0), what: Mutex::new("") }
    }
}

impl Watch {
    fn enter(&self, what: &'static str) {
        *self.what.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = what;
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.waiting_since.store(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.waiting_since.store(0, Ordering::SeqCst);
    }

    /// What the peer waits for and for how many seconds, if it waits.
    pub fn waiting(&self) -> Option<(&'static str, f64)> {
        let since = self.waiting_since.load(Ordering::SeqCst);
        if since == 0 {
            return None;
        }
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let what = *self.what.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some((what, now.saturating_sub(since) as f64 / 1000.0))
    }
}

fn collective_error(what: &str, error: CollectiveError) -> Error {
    let detail = match error {
        CollectiveError::Global(global) => format!("{global:?}"),
        CollectiveError::Other(text) => text,
        other => format!("{other:?}"),
    };
    // A node that died shows as a lost peer, or as the local server it took down with it.
    if detail.contains("PeerLost") || detail.contains("LocalServerMissing") {
        return Error::Collective(format!("lost the other peers while {what} ({detail}): {PEER_LOST_HINT}"));
    }
    Error::Collective(format!(
        "{what} failed ({detail}); check that every node runs the same atheria with the same settings and reaches the coordinator"
    ))
}

/// What to do when a peer or node stopped answering.
pub const PEER_LOST_HINT: &str = "a peer or node stopped or cannot be reached (see its output or OUT/node-R.log); the run continues from its last checkpoint with --resume";
