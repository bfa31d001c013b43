//! The live lab through a real WebSocket client: every command and its effect, bad input, two
//! clients and one that never reads, the Origin check, the token, uploads, training from the
//! protocol, and a clean stop on SIGINT. `robust` holds the tests of a lab no client can break,
//! `fuzz` the random command sequences.

mod client;
mod fuzz;
mod robust;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub use client::{http, http_status, runtime, status_when, winding, Client, Server};

#[test]
fn every_command_changes_the_universe_as_it_says() {
    let server = Server::start("commands", &["--history", "16"]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        assert_eq!(client.hello["version"], 1);
        assert!(client.hello["views"].as_array().unwrap().iter().any(|v| v["name"] == "phase"));
        assert_eq!(client.hello["colormaps"]["viridis"].as_array().unwrap().len(), 256);

        assert_eq!(client.ask(json!({"cmd": "pause"})).await["type"], "ack");
        let at = client.ask(json!({"cmd": "step", "count": 3})).await["step"].as_u64().unwrap();
        let (header, _) = client.frame_at(at + 3).await;
        assert_eq!(header["step"].as_u64().unwrap(), at + 3, "three steps, paused");

        client
            .ask(json!({"cmd": "set", "views": ["phase", "entropy"], "gamma": 0.05, "steps_per_frame": 2}))
            .await;
        let status = client.next_of(&["status"]).await;
        assert_eq!(status["gamma"], 0.05);
        assert_eq!(status["steps_per_frame"], 2);
        client.ask(json!({"cmd": "step"})).await;
        let (header, maps) = client.frame().await;
        assert_eq!(header["views"].as_array().unwrap().len(), 2);
        assert_eq!(maps.len(), 2 * 32 * 32);

        client.ask(json!({"cmd": "reset", "grid": [20, 24], "seed": 5, "init": "complex-noise"})).await;
        let (header, _) = client.frame().await;
        assert_eq!(header["grid"], json!([20, 24]));
        let probe = client.ask(json!({"cmd": "probe", "x": 23, "y": 19})).await;
        let density: f64 = probe["densities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        assert!((density - 1.0).abs() < 1e-4, "{probe}");

        // A vortex of winding 2 at the clicked cell: the phase turns by 4 pi around it.
        client.ask(json!({"cmd": "reset", "grid": [32, 32], "init": "complex-noise:0"})).await;
        assert_eq!(
            client.ask(json!({"cmd": "tool", "spec": "vortex:x=12,y=17,m=2,radius=10"})).await["type"],
            "ack"
        );
        let turned = winding(&client.ring_phases(12, 17, 2.5).await);
        assert!((turned - 4.0 * std::f64::consts::PI).abs() < 0.3, "winding {turned}");
        let elsewhere = winding(&client.ring_phases(26, 6, 2.5).await);
        assert!(elsewhere.abs() < 0.3, "no vortex away from the click: {elsewhere}");

        // Click-out stays on until switched off.
        client.ask(json!({"cmd": "tool", "spec": "click-out:chance=1"})).await;
        assert!(client.next_of(&["status"]).await["tools"][0].as_str().unwrap().starts_with("click-out"));
        client.ask(json!({"cmd": "tool", "spec": "click-out:enabled=false"})).await;
        assert_eq!(client.next_of(&["status"]).await["tools"], json!([]));

        // Snapshot, step on, load it back: the state (and its step) return.
        let saved_at = client.ask(json!({"cmd": "step"})).await["step"].as_u64().unwrap() + 1;
        client.frame_at(saved_at).await;
        let snapshot = client.ask(json!({"cmd": "snapshot", "name": "vortex"})).await;
        assert_eq!(snapshot["url"], "/snapshots/vortex.safetensors");
        let saved =
            atheria::io::state_file::load_state(&server.snapshots().join("vortex.safetensors")).unwrap();
        assert_eq!(saved.step, saved_at);
        client.ask(json!({"cmd": "step", "count": 4})).await;
        client.frame_at(saved_at + 4).await;
        let loaded = client.ask(json!({"cmd": "load_snapshot", "name": "vortex"})).await;
        assert_eq!(loaded["step"].as_u64().unwrap(), saved_at, "{loaded}");

        // Rewind: back to an earlier frame's state, counted from the state shown.
        client.ask(json!({"cmd": "set", "steps_per_frame": 1})).await;
        for _ in 0..4 {
            let step = client.ask(json!({"cmd": "step"})).await["step"].as_u64().unwrap();
            client.frame_at(step + 1).await;
        }
        let before = client.next_of(&["status"]).await;
        let rewound = client.ask(json!({"cmd": "rewind", "back": 3})).await;
        assert_eq!(rewound["step"].as_u64().unwrap(), before["step"].as_u64().unwrap() - 3, "{rewound}");

        // A GIF of the next frames.
        client.ask(json!({"cmd": "record", "frames": 3})).await;
        client.ask(json!({"cmd": "play"})).await;
        let recorded = client.next_of(&["recorded"]).await;
        let gif = server.snapshots().join(format!("{}.gif", recorded["name"].as_str().unwrap()));
        assert!(std::fs::read(&gif).unwrap().starts_with(b"GIF89a"));
        let (status, body) = http(server.port, "GET", recorded["url"].as_str().unwrap(), b"");
        assert_eq!((status, body.starts_with(b"GIF89a")), (200, true));
    });
}

#[test]
fn bad_input_is_answered_and_the_connection_and_simulation_go_on() {
    let server = Server::start("bad-input", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        for (text, needle) in [
            ("{not json", "bad command"),
            (r#"{"cmd":"teleport"}"#, "unknown variant"),
            (r#"{"cmd":"step","count":100000}"#, "count must be"),
            (r#"{"cmd":"set","max_fps":-1}"#, "max_fps"),
            (r#"{"cmd":"reset","grid":[4096,4]}"#, "grid must be"),
            (r#"{"cmd":"snapshot","name":"../../etc/passwd"}"#, "is not a name"),
            (r#"{"cmd":"load_snapshot","name":"missing"}"#, "missing.safetensors"),
            (r#"{"cmd":"tool","spec":"vortex:x=999"}"#, "outside"),
            (r#"{"cmd":"probe","x":99,"y":0}"#, "outside"),
            (r#"{"cmd":"rewind","back":1000}"#, "history holds"),
            (r#"{"cmd":"train_stop"}"#, "no training run"),
        ] {
            client.send_raw(Message::Text(text.into())).await;
            let reply = client.next_of(&["error"]).await;
            assert!(reply["error"].as_str().unwrap().contains(needle), "{text}: {reply}");
        }
        // The same connection still works, and the universe still steps.
        let step = client.ask(json!({"cmd": "step"})).await["step"].as_u64().unwrap();
        assert!(client.frame_at(step + 1).await.0["step"].as_u64().unwrap() > step);

        // An oversized message: refused; the server goes on for the others.
        let huge = format!(r#"{{"cmd":"tool","spec":"{}"}}"#, "v".repeat(64 * 1024));
        let _ = client.try_send_raw(Message::Text(huge.into())).await;
        let mut other = Client::connect(server.port, "", None).await.unwrap();
        assert_eq!(other.ask(json!({"cmd": "pause"})).await["type"], "ack");
    });
}

#[test]
fn slow_clients_get_the_newest_frame_and_never_slow_the_simulation() {
    let server = Server::start("clients", &["--grid", "64"]);
    runtime().block_on(async {
        let mut watcher = Client::connect(server.port, "", None).await.unwrap();
        watcher.ask(json!({"cmd": "set", "max_fps": 60})).await;
        // A client that connects and never reads again.
        let stalled = Client::connect(server.port, "", None).await.unwrap();
        let memory_before = server.resident_kib();
        let step_of = |status: (u16, Vec<u8>)| {
            serde_json::from_slice::<Value>(&status.1).unwrap()["step"].as_u64().unwrap()
        };
        let first = step_of(http(server.port, "GET", "/status", b""));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let status: Value = serde_json::from_slice(&http(server.port, "GET", "/status", b"").1).unwrap();
        let later = status["step"].as_u64().unwrap();
        assert!(later > first + 50, "the simulation went on: {first} -> {later}");
        assert_eq!(status["clients"], 2);
        // The watcher, reading again, reaches the newest frames.
        watcher.frame_at(later).await;
        let grown = server.resident_kib().saturating_sub(memory_before);
        assert!(grown < 64 * 1024, "the server grew by {grown} KiB for a client that never reads");
        // A second reader gets frames too.
        let mut second = Client::connect(server.port, "", None).await.unwrap();
        assert!(second.frame().await.0["step"].as_u64().unwrap() >= later);
        drop(stalled);
    });
}

#[test]
fn the_origin_and_the_token_guard_the_lab() {
    // Off loopback without a token: refused at start, with the reason.
    let output = crate::support::atheria_command()
        .args(["serve", "--device", "cpu", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && text.contains("--token"), "{text}");

    let server = Server::start("token", &["--token", "s3cret-token"]);
    runtime().block_on(async {
        let port = server.port;
        let without = Client::connect(port, "", None).await.err().unwrap();
        assert!(without.contains("401"), "{without}");
        let wrong = Client::connect(port, "?token=guess-guess", None).await.err().unwrap();
        assert!(wrong.contains("401"), "{wrong}");
        let foreign =
            Client::connect(port, "?token=s3cret-token", Some("http://evil.example")).await.err().unwrap();
        assert!(foreign.contains("403"), "{foreign}");
        let own = format!("http://127.0.0.1:{port}");
        let mut client = Client::connect(port, "?token=s3cret-token", Some(&own)).await.unwrap();
        assert_eq!(client.ask(json!({"cmd": "pause"})).await["type"], "ack");
    });
    assert_eq!(http(server.port, "GET", "/", b"").0, 401);
    let (status, page) = http(server.port, "GET", "/?token=s3cret-token", b"");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&page).contains("<canvas")
            || String::from_utf8_lossy(&page).contains("app.js")
    );
    assert_eq!(http(server.port, "GET", "/snapshots/x.safetensors", b"").0, 401);
}

#[test]
fn uploads_are_validated_and_snapshots_never_name_a_path() {
    let server = Server::start("uploads", &[]);
    let port = server.port;
    let (status, body) = http(port, "POST", "/snapshots?name=garbage", b"not a state file");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(!server.snapshots().join("garbage.safetensors").exists());
    assert_eq!(http(port, "POST", "/snapshots?name=../escape", b"x").0, 400);
    for path in ["/snapshots/..%2Fsecret.safetensors", "/snapshots/x.sh", "/runs/../frame.png"] {
        assert!(matches!(http(port, "GET", path, b"").0, 400 | 404), "{path}");
    }
    // A valid state of another grid, uploaded, then loaded into the run.
    let state = atheria::state::generate(&atheria::state::InitialState::Random, 1, 12, 16, 8, 4).unwrap();
    let file = server.dir.join("upload.safetensors");
    atheria::io::state_file::save_state(&file, &state).unwrap();
    let (status, body) = http(port, "POST", "/snapshots?name=mine", &std::fs::read(&file).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The lab's own snapshot format uploads too.
    let lab = crate::support::fixtures().join("lab/snapshot.pt");
    assert_eq!(http(port, "POST", "/snapshots?name=from-lab", &std::fs::read(lab).unwrap()).0, 200);
    runtime().block_on(async {
        let mut client = Client::connect(port, "", None).await.unwrap();
        assert_eq!(client.ask(json!({"cmd": "load_snapshot", "name": "mine"})).await["type"], "ack");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.frame().await.0["grid"] != json!([12, 16]) {
            assert!(Instant::now() < deadline, "no frame of the uploaded 12x16 state");
        }
        // The shipped model has d_state 8; the lab fixture's snapshot has 3 channels.
        let refused = client.ask(json!({"cmd": "load_snapshot", "name": "from-lab"})).await;
        assert!(refused["error"].as_str().unwrap().contains("d_state"), "{refused}");
    });
}

#[test]
fn training_runs_from_the_protocol_and_stops_with_a_checkpoint() {
    let mut server = Server::start("training", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        let settings = json!({"arch": "mlp", "d_state": 8, "hidden": 8, "grid": 8, "qca_steps": 2,
                              "episodes": 100000, "lr": 0.001, "loss": "evolutionary"});
        let started = client.ask(json!({"cmd": "train_start", "settings": settings})).await;
        assert_eq!(started["type"], "training", "{started}");
        let again = client.ask(json!({"cmd": "train_start", "settings": settings})).await;
        assert!(again["error"].as_str().unwrap().contains("one at a time"), "{again}");
        // The run grows: episodes arrive in the status and through train_history.
        let mut points = 0;
        while points < 12 {
            points = client.next_of(&["status"]).await["training"]["points"].as_u64().unwrap();
        }
        let history = client.ask(json!({"cmd": "train_history", "since": 2})).await;
        assert_eq!(history["points"][0]["episode"], 2);
        assert!(history["points"][0]["loss"].as_f64().unwrap().is_finite());
        let loaded = client.ask(json!({"cmd": "train_load", "which": "best"})).await;
        assert_eq!(loaded["type"], "loaded", "{loaded}");
    });
    // SIGINT: the run checkpoints the episode it reached, the server exits as Ctrl-C does.
    server.signal("INT");
    let status = server.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    let run = std::fs::read_dir(server.runs()).unwrap().next().unwrap().unwrap().path();
    let last = atheria::training::checkpoint::resolve(&run, "last").expect("a last checkpoint");
    let state = atheria::training::checkpoint::read_state(&last).unwrap();
    assert!(state.episode >= 12, "checkpointed at episode {}", state.episode);
    assert!(Path::new(&run.join("metrics.csv")).exists());
}

#[test]
fn a_sparse_universe_is_served_with_its_stored_tiles_and_a_window_that_moves() {
    let server = Server::start("sparse", &["--sparse", "--seed-matter", "0,0,6", "--grid", "64"]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        assert_eq!(client.hello["sparse"], true);
        client.ask(json!({"cmd": "pause"})).await;
        let (header, maps) = client.frame().await;
        let sparse = &header["sparse"];
        assert_eq!(sparse["origin"], json!([-32, -32]), "the window is centred on the blob");
        assert!(!sparse["tiles"].as_array().unwrap().is_empty(), "the blob's tiles are stored");
        assert_eq!(maps.len(), header["views"].as_array().unwrap().len() * 64 * 64);
        // Panning moves the window over the unbounded universe: far away is vacuum.
        assert_eq!(client.ask(json!({"cmd": "window", "x": 100_000, "y": -5_000})).await["type"], "ack");
        let step = client.ask(json!({"cmd": "step"})).await["step"].as_u64().unwrap();
        let (header, _) = client.frame_at(step + 1).await;
        assert_eq!(header["sparse"]["origin"], json!([100_000, -5_000]));
        assert_eq!(header["metrics"]["matter_cells"], 0, "vacuum far from the blob");
        let status = client.next_of(&["status"]).await;
        assert!(status["sparse"]["stored_tiles"].as_u64().unwrap() > 0);
        let refused = client.ask(json!({"cmd": "tool", "spec": "vortex"})).await;
        assert!(refused["error"].as_str().unwrap().contains("dense run"), "{refused}");
    });
}

#[test]
fn a_state_file_starts_the_lab_tiled_over_its_grid_and_reset_starts_it_again() {
    use atheria::state::{generate, InitialState};
    let dir = crate::support::scratch("init-file-start");
    let file = dir.join("start.safetensors");
    let state = generate(&InitialState::Random, 1, 8, 8, 8, 3).unwrap();
    atheria::io::state_file::save_state(&file, &state).unwrap();
    let server = Server::start("init-file", &["--init", file.to_str().unwrap(), "--grid", "16"]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        // The lab stepped on from the file at once; a reset starts from the file again.
        assert_eq!(client.ask(json!({"cmd": "reset"})).await["step"], 0);
        let status = client.next_of(&["status"]).await;
        assert_eq!(
            (status["grid"].clone(), status["init"].clone()),
            (json!([16, 16]), json!(file.to_str().unwrap()))
        );
        for (x, y) in [(1usize, 2usize), (9, 10), (15, 7)] {
            let probe = client.ask(json!({"cmd": "probe", "x": x, "y": y})).await;
            let at = ((y % 8) * 8 + x % 8) * 8;
            for channel in 0..8 {
                let (re, im) = (state.re.data[at + channel], state.im.data[at + channel]);
                let density = probe["densities"][channel].as_f64().unwrap();
                assert!(
                    (density - f64::from(re * re + im * im)).abs() < 1e-6,
                    "({x}, {y}) {channel}: {probe}"
                );
            }
        }
    });
}
