//! Random command sequences against a real server: commands drawn from the protocol's table
//! with random and extreme values (huge, tiny, negative, NaN as a string, wrong types, unknown
//! fields, nested objects), broken JSON and binary messages. Every message gets exactly one
//! reply, and afterwards the lab still steps, streams frames, tells the truth in its status and
//! has logged no panic. Seeded, so a failure repeats; bounded in time.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{runtime, status_when, Client, Server};

/// How long the sequences may run, and how many must have run for the test to mean anything.
const BUDGET: Duration = Duration::from_secs(35);
const SEQUENCES: usize = 2000;
const AT_LEAST: usize = 300;

/// Values a field may get: small valid ones mostly, and every kind of trouble.
fn value(rng: &mut ChaCha8Rng) -> Value {
    match rng.gen_range(0..20) {
        0..=5 => json!(rng.gen_range(0..40)),
        6 => json!(rng.gen_range(-1.0..2.0)),
        7 => [json!(-1), json!(0), json!(4294967296_u64), json!(u64::MAX), json!(i64::MIN)]
            .choose(rng)
            .unwrap()
            .clone(),
        8 => json!([1e308, -1e308, 1e-300, -0.0, 5e-324, 1.5].choose(rng).unwrap()),
        9 => json!(["NaN", "inf", "-inf", "1e999", ""].choose(rng).unwrap()),
        10 => json!(rng.gen::<bool>()),
        11 => Value::Null,
        12 => json!([1, [2, [3]], {"a": {}}]),
        13 => json!({"nested": {"deeper": [null, 1e308]}}),
        14 => json!("x".repeat(rng.gen_range(0..300))),
        15 => json!(["phase", "entropy", "colour", "energy"].choose(rng).unwrap()),
        16 => json!([rng.gen_range(0..70), rng.gen_range(0..70)]),
        17 => json!([
            "vortex:x=5,y=5,m=1,radius=3",
            "collapse:radius=400",
            "wave:kx=1e308",
            "click-out:chance=2",
            "swirl"
        ]
        .choose(rng)
        .unwrap()),
        18 => json!([
            "random",
            "zeros",
            "complex-noise:0.3",
            "complex-noise:1e308",
            "/etc/passwd",
            "complex-noise:-1"
        ]
        .choose(rng)
        .unwrap()),
        _ => json!(["best", "last", "worst", "a/b", "snap_1", "../x"].choose(rng).unwrap()),
    }
}

/// The fields of each command, and a few that no command has.
const TABLE: &[(&str, &[&str])] = &[
    ("play", &[]),
    ("pause", &[]),
    ("step", &["count"]),
    ("reset", &["seed", "init", "grid", "batch"]),
    ("set", &["steps_per_frame", "max_fps", "gamma", "views", "universe"]),
    ("tool", &["spec"]),
    ("probe", &["x", "y"]),
    ("snapshot", &["name"]),
    ("load_snapshot", &["name"]),
    ("record", &["frames"]),
    ("rewind", &["back"]),
    ("window", &["x", "y"]),
    ("matter", &["x", "y", "radius"]),
    ("train_start", &["settings"]),
    ("train_stop", &[]),
    ("train_load", &["which"]),
    ("train_history", &["since"]),
    ("fly", &["x"]),
];

/// One message of a sequence.
fn message(rng: &mut ChaCha8Rng) -> Message {
    match rng.gen_range(0..40) {
        0 => return Message::Binary(vec![0xff; rng.gen_range(0..64)].into()),
        1 => return Message::Text("{\"cmd\": \"step\", ".into()),
        2 => return Message::Text(json!([1, 2, 3]).to_string().into()),
        _ => {}
    }
    let (name, fields) = TABLE.choose(rng).unwrap();
    let mut command = Map::new();
    command.insert("cmd".into(), json!(name));
    for field in *fields {
        if rng.gen_bool(0.7) {
            let mut chosen = value(rng);
            // Keep what would be accepted cheap: small grids and batches, short steps, no
            // training run that would take the CPU for the rest of the test.
            match *field {
                "grid"
                    if chosen.as_array().is_some_and(|a| {
                        a.iter().all(|v| v.as_u64().is_some_and(|n| (1..=1024).contains(&n)))
                    }) =>
                {
                    chosen = json!([rng.gen_range(4..48), rng.gen_range(4..48)])
                }
                "batch" if chosen.as_u64().is_some_and(|n| n > 4) => chosen = json!(2),
                "count" if chosen.as_u64().is_some_and(|n| n > 50) => chosen = json!(50),
                "settings" => chosen = json!({"arch": "mlp", "d_state": chosen}),
                _ => {}
            }
            command.insert(field.to_string(), chosen);
        }
    }
    if rng.gen_ratio(1, 8) {
        command.insert(["extra", "cmd2", "x"].choose(rng).unwrap().to_string(), value(rng));
    }
    Message::Text(Value::Object(command).to_string().into())
}

#[test]
fn random_command_sequences_never_break_the_lab() {
    let server = Server::start("fuzz", &["--history", "8"]);
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let started = Instant::now();
    let ran = runtime().block_on(async {
        let mut sequences = 0;
        let mut client = Client::connect(server.port, "", None).await.unwrap();
        while sequences < SEQUENCES && started.elapsed() < BUDGET {
            if sequences % 100 == 99 {
                client = Client::connect(server.port, "", None).await.unwrap();
            }
            for _ in 0..rng.gen_range(1..12) {
                let sent = message(&mut rng);
                let shown = format!("{sent:?}");
                client.send_raw(sent).await;
                let reply = client.reply().await;
                assert!(reply["type"].is_string(), "{shown}: {reply}");
                if let Some(error) = reply["error"].as_str() {
                    assert!(!error.contains("panic") && !error.contains("failed"), "{shown}: {reply}");
                }
            }
            sequences += 1;
        }
        // Afterwards it steps, streams and tells the truth.
        client.ask(json!({"cmd": "reset", "grid": [16, 16], "batch": 1})).await;
        client
            .ask(
                json!({"cmd": "set", "views": ["phase"], "steps_per_frame": 1, "max_fps": 60, "universe": 0}),
            )
            .await;
        let at = client.ask(json!({"cmd": "step", "count": 3})).await["step"].as_u64().unwrap();
        let (header, maps) = client.frame_at(at + 3).await;
        assert_eq!((header["step"].as_u64().unwrap(), maps.len()), (at + 3, 16 * 16));
        let status = status_when(server.port, "the last reset", |s| s["grid"] == json!([16, 16])).await;
        assert_eq!(status["healthy"], true, "{status}");
        assert_eq!(status["error"], Value::Null, "no failure had to be recovered from: {status}");
        assert_eq!(status["grid"], json!([16, 16]));
        sequences
    });
    eprintln!("{ran} random command sequences in {:?}", started.elapsed());
    assert!(ran >= AT_LEAST, "only {ran} sequences in {BUDGET:?}");
    let log = server.log();
    assert!(!log.contains("panicked") && !log.contains("ERROR"), "{log}");
}
