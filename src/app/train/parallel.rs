//! Data-parallel training on burn-collective: one peer per device, on one machine or several.
//!
//! Every peer holds the whole model and optimizer, steps its share of each episode's universes,
//! and takes the mean of every peer's gradients (burn-collective's all-reduce) before clipping
//! and AdamW, so the model stays identical everywhere. Peer 0 writes the run. The process
//! watches its peers: one that waits in a collective operation longer than the timeout (a peer
//! or node died, the coordinator is gone) stops the run with an error instead of hanging.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use burn::backend::Autodiff;
use burn::collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::tensor::backend::AutodiffBackend;
use sha2::{Digest, Sha256};

use super::{check_memory, open_trainer, train_loop, Role, TrainOptions, TrainReport};
use crate::backend::{run_on_devices, select_device, DeviceReport, DeviceRequest, DevicesJob, SelectOptions};
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::training::gradients::parameter_ids;
use crate::training::peer::{Peer, Watch};
use crate::training::Trainer;

/// How a data-parallel run is spread.
#[derive(Debug, Clone)]
pub struct ParallelOptions {
    /// One peer per device on this node (`cpu,cpu`, `cuda:0,cuda:1`); every node the same
    /// number, all of one backend.
    pub devices: Vec<DeviceRequest>,
    /// Several machines: this node's place among them.
    pub nodes: Option<NodeOptions>,
    /// How long a peer may wait for the others in one collective operation before the run
    /// stops with an error (a peer or node that died).
    pub peer_timeout: Duration,
    /// How long to wait for every peer and node to join.
    pub join_timeout: Duration,
}

impl ParallelOptions {
    /// One node with these devices, the default timeouts.
    pub fn local(devices: Vec<DeviceRequest>) -> Self {
        Self { devices, nodes: None, peer_timeout: DEFAULT_PEER_TIMEOUT, join_timeout: DEFAULT_JOIN_TIMEOUT }
    }
}

/// The default `peer_timeout`: a dead node is noticed within two minutes.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(90);
/// The default `join_timeout`: time to start the other nodes by hand.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// One machine of a run over several.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Machines in the run.
    pub nodes: u32,
    /// This machine's rank, 0 to `nodes - 1`; node 0 writes the run.
    pub rank: u32,
    /// The coordinator (`atheria coordinator`).
    pub coordinator: SocketAddr,
    /// The address the other nodes reach this one at (default: the address this machine
    /// reaches the coordinator from).
    pub address: Option<IpAddr>,
    /// The port this node serves tensors to the others on (default: the coordinator's port
    /// plus one plus the rank).
    pub data_port: Option<u16>,
}

impl NodeOptions {
    fn address(&self) -> Result<IpAddr> {
        if let Some(address) = self.address {
            return Ok(address);
        }
        if self.coordinator.ip().is_loopback() {
            return Ok(self.coordinator.ip());
        }
        // The interface that routes to the coordinator (a UDP "connection" sends nothing).
        let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|socket| socket.connect(self.coordinator).and_then(|()| socket.local_addr()));
        probe.map(|local| local.ip()).map_err(|error| {
            Error::InvalidParallel(format!(
                "cannot tell this node's address towards the coordinator {} ({error}); pass --node-address",
                self.coordinator
            ))
        })
    }

    fn data_port(&self) -> Result<u16> {
        match self.data_port {
            Some(port) => Ok(port),
            None => u16::try_from(u32::from(self.coordinator.port()) + 1 + self.rank).map_err(|_| {
                Error::InvalidParallel(
                    "no default data port above the coordinator's: pass --data-port".into(),
                )
            }),
        }
    }
}

/// Trains with one peer per device of `parallel`, on this node.
pub fn train(
    options: &TrainOptions,
    parallel: &ParallelOptions,
    on_device: &dyn Fn(&DeviceReport),
) -> Result<TrainReport> {
    if parallel.devices.is_empty() {
        return Err(Error::InvalidParallel("--devices names no device".into()));
    }
    if let Some(node) = &parallel.nodes {
        if node.nodes == 0 || node.rank >= node.nodes {
            return Err(Error::InvalidParallel(format!(
                "node rank {} is not among {} node(s): ranks go from 0 to {}",
                node.rank,
                node.nodes,
                node.nodes.saturating_sub(1)
            )));
        }
    }
    let select = SelectOptions { strict: options.strict_device, ..SelectOptions::from_environment()? };
    let mut devices = Vec::with_capacity(parallel.devices.len());
    let mut report = None;
    for request in &parallel.devices {
        let selection = select_device(*request, &select)?;
        on_device(&selection.report);
        report.get_or_insert(selection.report);
        devices.push(selection.device);
    }
    let job = PeersJob { options: options.clone(), parallel: parallel.clone() };
    let mut trained = run_on_devices(&devices, job)??;
    trained.device = report;
    Ok(trained)
}

struct PeersJob {
    options: TrainOptions,
    parallel: ParallelOptions,
}

impl DevicesJob for PeersJob {
    type Output = Result<TrainReport>;

    fn run<B: EngineBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        run_peers::<Autodiff<B>>(self.options, self.parallel, devices)
    }
}

/// Starts a thread per device and waits for them, watching that none waits too long.
fn run_peers<B>(
    options: TrainOptions,
    parallel: ParallelOptions,
    devices: Vec<B::Device>,
) -> Result<TrainReport>
where
    B: AutodiffBackend + EngineBackend,
{
    let local = devices.len();
    let (node_rank, nodes) = parallel.nodes.as_ref().map_or((0, 1), |node| (node.rank, node.nodes));
    let collective = collective_config(local, parallel.nodes.as_ref())?;
    // A lost node can make burn's tasks panic; the run reports that as one error line of its
    // own, so those panics go to the log instead of stderr. burn-collective's threads (see
    // vendor/burn-collective/PATCH.md) live as long as the process, and so does this.
    crate::guard::quiet_threads(&["peer-", "collective-"]);
    let (sender, receiver) = mpsc::channel();
    let mut watches = Vec::with_capacity(local);
    for (index, device) in devices.into_iter().enumerate() {
        let rank = node_rank as usize * local + index;
        let watch = Arc::new(Watch::default());
        watches.push(watch.clone());
        let peer = Peer { id: PeerId::from(rank), rank, count: local * nodes as usize, watch };
        let role = match (rank, index) {
            (0, _) => Role::Run,
            (_, 0) => Role::NodeLog(node_rank),
            _ => Role::Quiet,
        };
        let (options, collective, sender) = (options.clone(), collective.clone(), sender.clone());
        let spawned = std::thread::Builder::new().name(format!("peer-{rank}")).spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                run_peer::<B>(&options, peer, &device, collective, role, local)
            }));
            let result = outcome.unwrap_or_else(|payload| {
                Err(Error::Collective(format!(
                    "peer {rank} failed: {}",
                    crate::guard::panic_text(payload.as_ref())
                )))
            });
            let _ = sender.send((index, result));
        });
        spawned.map_err(|error| Error::Collective(format!("cannot start peer {rank}: {error}")))?;
    }
    drop(sender);

    let mut reports: Vec<Option<TrainReport>> = vec![None; local];
    while reports.iter().any(Option::is_none) {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok((index, Ok(report))) => reports[index] = Some(report),
            // The first failure ends the run; peers blocked waiting for the failed one are
            // left behind (the process ends, or the caller reports the error).
            Ok((_, Err(error))) => return Err(error),
            Err(RecvTimeoutError::Timeout) => check_watches(&watches, &parallel)?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Collective("a peer stopped without a result".into()))
            }
        }
    }
    // The first peer's report: node 0's describes the run it wrote.
    reports.into_iter().flatten().next().ok_or_else(|| Error::Collective("no peer reported".into()))
}

/// An error when a peer has waited longer than its timeout.
fn check_watches(watches: &[Arc<Watch>], parallel: &ParallelOptions) -> Result<()> {
    for watch in watches {
        let Some((what, seconds)) = watch.waiting() else { continue };
        let joining = what == crate::training::peer::JOINING;
        let limit = if joining { parallel.join_timeout } else { parallel.peer_timeout };
        if seconds > limit.as_secs_f64() {
            let hint = if joining {
                "start every node (atheria train ... --nodes N --node-rank R --coordinator HOST:PORT) and the coordinator, or raise --join-timeout"
            } else {
                crate::training::peer::PEER_LOST_HINT
            };
            return Err(Error::Collective(format!(
                "no answer from the other peers for {seconds:.0} s while {what}: {hint}"
            )));
        }
    }
    Ok(())
}

/// One peer, on its own thread: open (or resume) the trainer, join the collective, check that
/// every peer trains the same run, then train.
fn run_peer<B>(
    options: &TrainOptions,
    peer: Peer,
    device: &B::Device,
    collective: CollectiveConfig,
    role: Role,
    local: usize,
) -> Result<TrainReport>
where
    B: AutodiffBackend + EngineBackend,
{
    let mut trainer = open_trainer::<B>(options, device, role.clone())?;
    trainer.join(peer.clone())?;
    check_memory(&trainer, local)?;
    peer.register::<B::InnerBackend>(device, collective)?;
    check_same_run(&trainer, &peer, local)?;
    let report = train_loop(&mut trainer, options, role)?;
    peer.finish::<B::InnerBackend>()?;
    Ok(report)
}

/// burn-collective's settings: trees both within a node and between nodes (a ring refuses
/// tensors smaller than the number of nodes, and the losses are scalars).
fn collective_config(local: usize, node: Option<&NodeOptions>) -> Result<CollectiveConfig> {
    let config = CollectiveConfig::default()
        .with_num_devices(local)
        .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2))
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
    let Some(node) = node else { return Ok(config) };
    let address = node.address()?;
    let port = node.data_port()?;
    // burn-collective starts this server in the background and drops its errors: a port in
    // use would only show as peers that never answer.
    TcpListener::bind((address, port)).map_err(|error| {
        Error::InvalidParallel(format!(
            "this node cannot serve its tensors on {}: {error} (choose another --data-port)",
            SocketAddr::new(address, port)
        ))
    })?;
    // This node's tensor service listens on the address the others reach it at, not on every
    // interface.
    burn_communication::websocket::set_bind_ip(address);
    let parse = |text: String| {
        burn_communication::Address::from_str(&text)
            .map_err(|error| Error::InvalidParallel(format!("bad address {text}: {error}")))
    };
    Ok(config
        .with_num_nodes(node.nodes)
        .with_global_address(parse(format!("ws://{}", node.coordinator))?)
        .with_node_address(parse(format!("ws://{}", SocketAddr::new(address, port)))?)
        .with_data_service_port(port))
}

/// Refuses a run whose peers differ in a setting, the episode they start from, the weights or
/// the software: each peer reduces short digests of each (their sums and sums of squares agree
/// with every peer's own only when all are equal) and names what differs.
fn check_same_run<B>(trainer: &Trainer<B>, peer: &Peer, local: usize) -> Result<()>
where
    B: AutodiffBackend + EngineBackend,
{
    let fields = run_fields(trainer, local)?;
    let digests: Vec<[f64; DIGEST_BYTES]> = fields.iter().map(|(_, text)| digest(text)).collect();
    let values: Vec<f64> = digests.iter().flatten().copied().collect();
    let squares: Vec<f64> = values.iter().map(|value| value * value).collect();
    let all: Vec<f64> = values.iter().chain(&squares).copied().collect();
    let sums = peer.reduce::<B::InnerBackend>(
        &all,
        ReduceOperation::Sum,
        trainer.device(),
        "comparing the settings",
    )?;
    let (sum, sum_of_squares) = sums.split_at(values.len());
    let peers = peer.count as f64;
    let differing: Vec<&str> = fields
        .iter()
        .enumerate()
        .filter(|(field, _)| {
            (0..DIGEST_BYTES).any(|byte| {
                let at = field * DIGEST_BYTES + byte;
                peers * sum_of_squares[at] != sum[at] * sum[at]
            })
        })
        .map(|(_, (name, _))| name.as_str())
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidParallel(format!(
        "the nodes do not train the same run: they differ in {} (every node needs the same settings, the same number of --devices, the same starting model or checkpoint and the same atheria)",
        differing.join(", ")
    )))
}

/// Bytes of each field's digest compared (a chance of 2^-24 that a difference goes unseen).
const DIGEST_BYTES: usize = 3;

fn digest(text: &str) -> [f64; DIGEST_BYTES] {
    let hash = Sha256::digest(text.as_bytes());
    std::array::from_fn(|byte| f64::from(hash[byte]))
}

/// What every peer must agree on, by name.
fn run_fields<B>(trainer: &Trainer<B>, local: usize) -> Result<Vec<(String, String)>>
where
    B: AutodiffBackend + EngineBackend,
{
    let config = serde_json::to_value(&trainer.config)
        .map_err(|error| Error::InvalidTraining(format!("cannot encode the settings: {error}")))?;
    let mut fields: Vec<(String, String)> = match config {
        serde_json::Value::Object(map) => map
            .into_iter()
            // The starting model may lie at another path on another machine: its weights
            // are compared instead.
            .filter(|(name, _)| name != "init_model")
            .map(|(name, value)| (name, value.to_string()))
            .collect(),
        _ => Vec::new(),
    };
    let weights = crate::models::params::collect_parameters(&trainer.model.law)?;
    let mut hash = Sha256::new();
    for (_, tensor) in &weights {
        for value in &tensor.data {
            hash.update(value.to_le_bytes());
        }
    }
    fields.push(("weights".into(), format!("{:x}", hash.finalize())));
    fields.push(("parameter ids".into(), format!("{:?}", parameter_ids(&trainer.model.law))));
    fields.push(("episode".into(), trainer.state.episode.to_string()));
    fields.push(("devices per node".into(), local.to_string()));
    fields.push(("atheria version".into(), env!("CARGO_PKG_VERSION").into()));
    Ok(fields)
}

/// `atheria coordinator`: burn-collective's global orchestrator on `bind`, until a signal.
pub fn coordinator(bind: SocketAddr) -> Result<()> {
    // Its server reports a port in use only in its log; this says it plainly.
    TcpListener::bind(bind).map_err(|error| {
        Error::InvalidParallel(format!("the coordinator cannot listen on {bind}: {error}"))
    })?;
    burn_communication::websocket::set_bind_ip(bind.ip());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Collective(format!("cannot start the coordinator's runtime: {error}")))?;
    runtime.block_on(burn::collective::start_global_orchestrator(bind.port()));
    Ok(())
}
