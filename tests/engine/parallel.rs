//! Data-parallel training: two CPU peers in one process, two nodes and a coordinator on
//! loopback, each against the same run on one device; a node that dies; nodes that disagree.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use atheria::io::state_file::load_state;
use atheria::training::checkpoint::{resolve, LAST};

use crate::support::{assert_one_line_error, atheria, atheria_command, scratch, state_error, stderr};

/// Settings with noise from the first episode and a batch of 4, so that the split of the
/// universes and their random streams matter.
fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("train.toml");
    let text = "arch = \"unet\"\nd_state = 2\nhidden = 4\ngrid = 8\nqca_steps = 3\nbatch = 4\n\
                lr = 1e-3\nseed = 5\nmax_noise = 0.2\nnoise_ramp_episodes = 1\nbit_flip_chance = 0.5\n\
                checkpoint_every = 2\nframe_every = 0\n";
    std::fs::write(&path, text).unwrap();
    path
}

fn train_args(config: &Path, out: &Path, episodes: u64) -> Vec<String> {
    ["train", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]
        .into_iter()
        .map(str::to_string)
        .chain(["--episodes".to_string(), episodes.to_string()])
        .collect()
}

fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    atheria(&args)
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "failed: {}", stderr(output));
}

/// Five steps of the trained model from one seeded state: what the model does, compared
/// rather than its bytes.
fn rollout(out: &Path) -> atheria::io::state_file::HostState {
    let model = resolve(out, LAST).expect("a last checkpoint");
    let state = out.with_extension("rollout.safetensors");
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--grid",
        "8",
        "--batch",
        "2",
        "--steps",
        "5",
        "--seed",
        "9",
        "--save-state",
        state.to_str().unwrap(),
    ]);
    assert_success(&output);
    load_state(&state).unwrap()
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn assert_same_run(single: &Path, parallel: &Path) {
    let error = state_error(&rollout(single), &rollout(parallel));
    assert!(error <= 1e-5, "5-step rollouts of the two models differ by {error:.2e} (relative)");
    let (a, b) = (losses(single), losses(parallel));
    assert_eq!(a.len(), b.len());
    for (episode, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-6), "episode {episode}: loss {a} against {b}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when dropped (a failed assertion must not leave a coordinator running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coordinator(port: u16) -> Running {
    let child = atheria_command()
        .args(["coordinator", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

fn node(args: &[String], nodes: u32, rank: u32, port: u16, extra: &[&str]) -> Child {
    node_serving_on(args, nodes, rank, port, free_port(), extra)
}

/// [`node`], serving its tensors and barriers on `data_port`, and logging any panic it quiets
/// (those of burn-collective's threads) where [`node`] hides them.
fn node_serving_on(
    args: &[String],
    nodes: u32,
    rank: u32,
    port: u16,
    data_port: u16,
    extra: &[&str],
) -> Child {
    atheria_command()
        .env("RUST_LOG", "atheria::guard=debug,atheria=info,error")
        .args(args)
        .args(["--device", "cpu", "--nodes", &nodes.to_string(), "--node-rank", &rank.to_string()])
        .args(["--coordinator", &format!("127.0.0.1:{port}"), "--data-port", &data_port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; `None` (and the child killed) if it runs longer.
fn wait_at_most(mut child: Child, limit: Duration) -> Option<Output> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

#[test]
fn two_peers_in_one_process_train_what_one_device_trains_and_resume() {
    let dir = scratch("parallel-local");
    let config = config_file(&dir);
    let (single, parallel) = (dir.join("single"), dir.join("parallel"));
    assert_success(&run(&[train_args(&config, &single, 4), vec!["--device".into(), "cpu".into()]].concat()));

    let peers = ["--devices".to_string(), "cpu,cpu".to_string()];
    let first = run(&[train_args(&config, &parallel, 2), peers.to_vec()].concat());
    assert_success(&first);
    assert!(stderr(&first).contains("2 cpu peers"), "{}", stderr(&first));
    let resumed = run(&[
        vec!["train".into(), "--quiet".into(), "--out".into(), parallel.to_str().unwrap().into()],
        vec!["--resume".into(), "--episodes".into(), "4".into()],
        peers.to_vec(),
    ]
    .concat());
    assert_success(&resumed);
    assert_same_run(&single, &parallel);
}

#[test]
fn two_nodes_and_a_coordinator_train_what_one_device_trains() {
    let dir = scratch("parallel-nodes");
    let config = config_file(&dir);
    let (single, zero, one) = (dir.join("single"), dir.join("node0"), dir.join("node1"));
    assert_success(&run(&[train_args(&config, &single, 3), vec!["--device".into(), "cpu".into()]].concat()));

    let port = free_port();
    let _coordinator = coordinator(port);
    let first = node(&train_args(&config, &zero, 3), 2, 0, port, &[]);
    let second = node(&train_args(&config, &one, 3), 2, 1, port, &[]);
    let second = wait_at_most(second, Duration::from_secs(120)).expect("node 1 finishes");
    let first = wait_at_most(first, Duration::from_secs(120)).expect("node 0 finishes");
    assert_success(&first);
    assert_success(&second);
    assert_same_run(&single, &zero);
    // Node 1 writes a log of its episodes, and no run.
    let log = std::fs::read_to_string(one.join("node-1.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(resolve(&one, LAST).is_none(), "node 1 wrote checkpoints");
}

/// Clients that are not nodes reach a node's tensor (`/data`) and barrier (`/sync`) services:
/// on each, one goes away without a word and one sends bytes that are not a request.
fn stray_clients(data_port: u16) {
    use tokio_tungstenite::tungstenite::{connect, Message};
    for path in ["data", "sync"] {
        let url = format!("ws://127.0.0.1:{data_port}/{path}");
        let (silent, _) = connect(&url).expect("a node serves its services");
        drop(silent);
        let (mut garbage, _) = connect(&url).expect("a node serves its services");
        garbage.send(Message::Binary(vec![0xc1, 0xff, 0x00].into())).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `log` holds at least `lines` lines.
fn wait_for_lines(log: &Path, lines: usize) {
    let started = Instant::now();
    while std::fs::read_to_string(log).map_or(0, |text| text.lines().count()) < lines {
        assert!(started.elapsed() < Duration::from_secs(120), "the nodes stopped training");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stray_clients_are_ignored_and_a_node_that_dies_stops_the_others_with_an_error() {
    let dir = scratch("parallel-dies");
    let config = config_file(&dir);
    let port = free_port();
    let _coordinator = coordinator(port);
    let timeout = ["--peer-timeout", "5"];
    let (zero, one) = (dir.join("node0"), dir.join("node1"));
    let data_port = free_port();
    let first = node_serving_on(&train_args(&config, &zero, 100_000), 2, 0, port, data_port, &timeout);
    let mut second = node(&train_args(&config, &one, 100_000), 2, 1, port, &timeout);

    // Once they train together, strangers talk to node 0; the nodes train on regardless.
    let log = one.join("node-1.log");
    wait_for_lines(&log, 3);
    stray_clients(data_port);
    let seen = std::fs::read_to_string(&log).unwrap().lines().count();
    wait_for_lines(&log, seen + 2);

    // Then node 1 dies without a word.
    second.kill().unwrap();
    let killed = Instant::now();
    let output = wait_at_most(first, Duration::from_secs(120)).expect("node 0 stops within two minutes");
    // Either the lost connection is reported, or the watchdog's timeout; no panic, not even a
    // quiet one, from the stray clients or the lost peer.
    assert_one_line_error(&output, "a peer or node stopped or cannot be reached");
    assert!(killed.elapsed() < Duration::from_secs(60), "took {:?}", killed.elapsed());
    let _ = second.wait();
}

#[test]
fn nodes_with_different_settings_are_refused() {
    let dir = scratch("parallel-mismatch");
    let config = config_file(&dir);
    let port = free_port();
    let _coordinator = coordinator(port);
    let first = node(&train_args(&config, &dir.join("node0"), 4), 2, 0, port, &[]);
    let second = node(&train_args(&config, &dir.join("node1"), 4), 2, 1, port, &["--lr", "2e-3"]);
    for child in [first, second] {
        let output = wait_at_most(child, Duration::from_secs(120)).expect("the node stops");
        assert_one_line_error(&output, "differ in lr");
    }
}

#[test]
fn impossible_parallel_requests_are_refused() {
    let dir = scratch("parallel-refused");
    let config = config_file(&dir);
    let args = train_args(&config, &dir.join("run"), 2);
    let refused = |extra: &[&str], needle: &str| {
        let output = run(&[args.clone(), extra.iter().map(|s| s.to_string()).collect()].concat());
        assert_one_line_error(&output, needle);
    };
    refused(&["--devices", "cpu,cpu,cpu"], "cannot be shared by 3 peers");
    refused(&["--nodes", "2", "--node-rank", "2", "--coordinator", "127.0.0.1:9"], "not among 2 node(s)");
    refused(&["--devices", "cpu,tpu"], "unknown device 'tpu'");
}
