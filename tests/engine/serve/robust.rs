//! A live lab no client can break: each defect a mischievous or hurried client found, and the
//! supervision that keeps the world going when its work fails.

use std::time::Duration;

use atheria::io::state_file::{save_state, HostState};
use atheria::state::{generate, InitialState};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{http, http_status, runtime, status_when, Client, Server};

/// The step count once nothing steps any more: the same in two statuses 0.6 s apart.
async fn settled_step(port: u16) -> u64 {
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = http_status(port)["step"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = http_status(port);
    assert_eq!(second["step"].as_u64().unwrap(), first, "still stepping: {second}");
    assert_eq!(second["pending_steps"], 0, "{second}");
    first
}

#[test]
fn extreme_values_are_refused_before_anything_changes() {
    let server = Server::start("robust-values", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        // A frame rate whose interval does not fit a Duration stopped the simulation for good.
        for fps in [1e-300, 0.0, -1.0, 1e300, 121.0] {
            let reply = client.ask(json!({"cmd": "set", "max_fps": fps})).await;
            assert_eq!(reply["type"], "error", "{fps}: {reply}");
            assert!(reply["error"].as_str().unwrap().contains("between 0.1 and 120"), "{reply}");
        }
        // Fields the command does not have, even commands without fields.
        for command in ["play", "pause", "train_stop"] {
            let reply = client.ask(json!({"cmd": command, "x": 1})).await;
            assert!(reply["error"].as_str().unwrap().contains("unknown field"), "{command}: {reply}");
        }
        // A noise strength that overflows the phases to NaN.
        let status = http_status(server.port);
        let reply = client.ask(json!({"cmd": "reset", "init": "complex-noise:1e308"})).await;
        assert!(reply["error"].as_str().unwrap().contains("from 0 to 1000"), "{reply}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(http_status(server.port)["init"], status["init"], "the refused reset changed nothing");
        // A set whose second field is bad changes nothing, not even its good first field.
        let reply = client.ask(json!({"cmd": "set", "universe": 0, "steps_per_frame": 7, "views": []})).await;
        assert_eq!(reply["type"], "error", "{reply}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(http_status(server.port)["steps_per_frame"], 1);
        // And the lab still steps, streams and tells the truth.
        let at = client.ask(json!({"cmd": "step", "count": 2})).await["step"].as_u64().unwrap();
        assert_eq!(client.frame_at(at + 2).await.0["step"].as_u64().unwrap(), at + 2);
        let status = http_status(server.port);
        assert_eq!(
            (status["healthy"].clone(), status["error"].clone()),
            (json!(true), Value::Null),
            "{status}"
        );
    });
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_long_step_ends_at_pause_reset_or_another_step() {
    let server = Server::start("robust-steps", &["--grid", "128"]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        client.ask(json!({"cmd": "step", "count": 10000})).await;
        client.frame_at(2).await;
        assert_eq!(client.ask(json!({"cmd": "pause"})).await["type"], "ack");
        let paused = settled_step(server.port).await;
        assert!(paused < 10000);

        client.ask(json!({"cmd": "step", "count": 10000})).await;
        client.frame_at(paused + 2).await;
        client.ask(json!({"cmd": "reset"})).await;
        assert_eq!(settled_step(server.port).await, 0, "a reset ends the steps");

        client.ask(json!({"cmd": "step", "count": 10000})).await;
        client.frame_at(2).await;
        client.ask(json!({"cmd": "play"})).await;
        client.ask(json!({"cmd": "pause"})).await;
        let after_play = settled_step(server.port).await;

        // Another step replaces what was left of the first.
        client.ask(json!({"cmd": "step", "count": 10000})).await;
        client.frame_at(after_play + 1).await;
        let at = client.ask(json!({"cmd": "step", "count": 2})).await["step"].as_u64().unwrap();
        assert_eq!(settled_step(server.port).await, at + 2);
    });
}

#[test]
fn steps_per_second_is_never_negative_wrapped_or_stale() {
    let server = Server::start("robust-rate", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "play"})).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let running = http_status(server.port);
        let rate = running["steps_per_s"].as_f64().unwrap();
        assert!(rate > 0.0 && rate < 1e5, "{running}");
        // The step count goes back to 0 while the rate window still holds the old counts.
        client.ask(json!({"cmd": "reset"})).await;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let status = http_status(server.port);
            let rate = status["steps_per_s"].as_f64().unwrap();
            assert!((0.0..1e5).contains(&rate), "{status}");
        }
        client.ask(json!({"cmd": "pause"})).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let paused = http_status(server.port);
        assert_eq!(paused["steps_per_s"], 0.0, "a paused lab takes no steps: {paused}");
    });
}

#[test]
fn a_burst_gets_exactly_one_reply_per_command() {
    let server = Server::start("robust-burst", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        for i in 0..500 {
            client.send(json!({"cmd": "probe", "x": i % 32, "y": 3})).await;
        }
        let mut probes = 0;
        for _ in 0..500 {
            let reply = client.reply().await;
            match reply["type"].as_str() {
                Some("probe") => probes += 1,
                Some("error") => assert!(reply["error"].as_str().unwrap().starts_with("busy"), "{reply}"),
                _ => panic!("{reply}"),
            }
        }
        assert!(probes >= 256, "{probes} probes answered");
        // Nothing more: the next reply is the next command's.
        assert_eq!(client.ask(json!({"cmd": "step"})).await["type"], "ack");
    });
}

#[test]
fn one_recording_at_a_time_and_uploads_never_overwrite() {
    let server = Server::start("robust-files", &[]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        assert_eq!(client.ask(json!({"cmd": "record", "frames": 3})).await["type"], "ack");
        let second = client.ask(json!({"cmd": "record", "frames": 3})).await;
        assert!(second["error"].as_str().unwrap().contains("under way"), "{second}");
        client.ask(json!({"cmd": "play"})).await;
        let recorded = client.next_of(&["recorded"]).await;
        assert!(server.snapshots().join(format!("{}.gif", recorded["name"].as_str().unwrap())).exists());

        client.ask(json!({"cmd": "pause"})).await;
        client.ask(json!({"cmd": "snapshot", "name": "mine"})).await;
        let file = std::fs::read(server.snapshots().join("mine.safetensors")).unwrap();
        let (code, body) = http(server.port, "POST", "/snapshots?name=mine", &file);
        assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("replace=true"));
        let (code, _) = http(server.port, "POST", "/snapshots?name=mine&replace=true", &file);
        assert_eq!(code, 200);
    });
}

#[test]
fn rewinding_by_one_goes_to_the_frame_before() {
    let server = Server::start("robust-rewind", &["--history", "8"]);
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        client.ask(json!({"cmd": "reset"})).await;
        client.frame_at(0).await;
        for step in 1..=3 {
            client.ask(json!({"cmd": "step"})).await;
            client.frame_at(step).await;
        }
        assert_eq!(client.ask(json!({"cmd": "rewind", "back": 1})).await["step"], 2);
        assert_eq!(client.ask(json!({"cmd": "rewind", "back": 1})).await["step"], 1);
        // Statuses go out four times a second: wait for one taken after the rewinds.
        let status =
            status_when(server.port, "the rewind", |s| s["step"] == 1 && s["running"] == false).await;
        assert_eq!(status["history"], 1, "one frame (step 0) before the one shown: {status}");
        assert_eq!(client.ask(json!({"cmd": "rewind", "back": 1})).await["step"], 0);
        let refused = client.ask(json!({"cmd": "rewind", "back": 1})).await;
        assert!(refused["error"].as_str().unwrap().contains("0 frame(s) before"), "{refused}");
    });
}

#[test]
fn a_failure_of_the_simulation_is_survived_and_reported_to_every_client() {
    // The lab runs from step 0 at once; the failure comes at step 1003 of a loaded state, long
    // after the clients connected and paused it.
    let env = [("ATHERIA_SERVE_PANIC_AT_STEP", "1003")];
    let server = Server::start_with_env("robust-panic", &["--grid", "32", "--history", "8"], &env);
    let late_state = HostState { step: 1000, ..generate(&InitialState::Random, 1, 32, 32, 8, 5).unwrap() };
    save_state(&server.snapshots().join("late.safetensors"), &late_state).unwrap();
    runtime().block_on(async {
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "pause"})).await;
        let mut other = Client::connect(server.port, "", None).await.unwrap();
        client.ask(json!({"cmd": "set", "max_fps": 120})).await;
        assert_eq!(client.ask(json!({"cmd": "load_snapshot", "name": "late"})).await["step"], 1000);
        client.ask(json!({"cmd": "play"})).await;
        for watcher in [&mut client, &mut other] {
            let notice = watcher.next_of(&["error"]).await;
            let text = notice["error"].as_str().unwrap();
            assert!(text.contains("injected") && text.contains("paused"), "{notice}");
        }
        let status = status_when(server.port, "the failure in the status", |s| !s["error"].is_null()).await;
        assert_eq!(status["healthy"], true, "{status}");
        assert_eq!(status["running"], false, "{status}");
        assert!(status["error"]["error"].as_str().unwrap().contains("last good state"), "{status}");
        let resumed_from = status["error"]["step"].as_u64().unwrap();
        assert!((1000..=1003).contains(&resumed_from), "{status}");
        // It goes on: steps, frames, new clients.
        let at = client.ask(json!({"cmd": "step", "count": 8})).await["step"].as_u64().unwrap();
        assert_eq!(at, resumed_from);
        assert!(client.frame_at(at + 8).await.0["step"].as_u64().unwrap() >= at + 8);
        let mut late = Client::connect(server.port, "", None).await.unwrap();
        assert_eq!(late.ask(json!({"cmd": "probe", "x": 1, "y": 1})).await["type"], "probe");
        late.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
        assert_eq!(late.reply().await["error"], "commands are JSON text");
    });
}
