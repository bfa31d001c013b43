//! The `atheria` binary as a user runs it: results on success, one readable line and a
//! non-zero exit on bad input, never a panic.

use atheria::io::state_file::{load_state, save_state};
use atheria::state::{generate, InitialState};

use crate::support::{
    assert_fails_with, assert_one_line_error, atheria, atheria_command, fixtures, scratch, stderr,
};

#[test]
fn run_on_the_embedded_default_writes_frames_and_state() {
    let dir = scratch("cli-run");
    let frames = dir.join("frames");
    let state = dir.join("final.safetensors");
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "16x24",
        "--steps",
        "5",
        "--every",
        "2",
        "--frames",
        frames.to_str().unwrap(),
        "--save-state",
        state.to_str().unwrap(),
    ]);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("running on cpu"), "{text}");
    assert!(text.contains("ran 5 steps of unet d8 h16"), "{text}");
    let mut names: Vec<String> =
        std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["frame_000000.png", "frame_000002.png", "frame_000004.png", "frame_000005.png"]);
    // The default picture: a labelled panel of four maps, each scaled up to 256 pixels.
    let picture = image::open(frames.join("frame_000005.png")).unwrap();
    assert!(picture.width() > 4 * 256, "{}", picture.width());
    assert!(picture.width() > 4 * picture.height(), "{}x{}", picture.width(), picture.height());
    let saved = load_state(&state).unwrap();
    assert_eq!(saved.dims(), [1, 16, 24, 8]);
    assert_eq!(saved.step, 5);
}

#[test]
fn a_saved_state_continues_and_tiles() {
    let dir = scratch("cli-init");
    let base = dir.join("base.safetensors");
    save_state(&base, &generate(&InitialState::Random, 1, 8, 8, 3, 1).unwrap()).unwrap();
    let out = dir.join("out.safetensors");
    let fixture = fixtures().join("mlp.safetensors");
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--weights",
        fixture.to_str().unwrap(),
        "--arch",
        "mlp",
        "--d-state",
        "3",
        "--hidden",
        "16",
        "--init",
        base.to_str().unwrap(),
        "--grid",
        "16",
        "--steps",
        "2",
        "--save-state",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(load_state(&out).unwrap().dims(), [1, 16, 16, 3]);
}

#[test]
fn device_comes_from_the_environment_too() {
    let output = atheria_command()
        .args(["run", "--steps", "1", "--grid", "8"])
        .env("ATHERIA_DEVICE", "cpu")
        .output()
        .unwrap();
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("requested cpu, running on cpu"), "{text}");
}

#[test]
fn bad_environment_values_are_refused_at_start() {
    for (variable, value, needle) in [
        ("ATHERIA_PROBE_TIMEOUT", "5s", "ATHERIA_PROBE_TIMEOUT=`5s`"),
        ("ATHERIA_PROBE_TIMEOUT", "0", "above 0"),
        ("ATHERIA_SIMD", "avx9", "ATHERIA_SIMD: `avx9`"),
    ] {
        let output = atheria_command()
            .args(["run", "--device", "cpu", "--steps", "1", "--grid", "8"])
            .env(variable, value)
            .output()
            .unwrap();
        assert_one_line_error(&output, needle);
    }
    // A whole number of seconds is taken.
    let output = atheria_command()
        .args(["run", "--device", "cpu", "--steps", "1", "--grid", "8"])
        .env("ATHERIA_PROBE_TIMEOUT", " 7 ")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = scratch("cli-bad");
    assert_fails_with(&["run", "--device", "tpu"], "unknown device 'tpu'");
    assert_fails_with(&["run", "--device", "cpu", "--grid", "18"], "multiples of 4");
    assert_fails_with(&["run", "--device", "cpu", "--grid", "0"], "invalid grid size");
    // Each cause is said once (the library's messages already name it).
    let missing =
        assert_fails_with(&["run", "--device", "cpu", "--model", "/nonexistent/dir"], "/nonexistent/dir");
    assert_eq!(missing.matches("not found").count(), 1, "{missing}");
    let missing = assert_fails_with(
        &["run", "--device", "cpu", "--init", "/nonexistent/psi.safetensors"],
        "psi.safetensors",
    );
    assert_eq!(missing.matches("(os error 2)").count(), 1, "{missing}");
    assert_fails_with(&["run", "--device", "cpu", "--arch", "unet"], "go together");
    assert_fails_with(
        &["run", "--device", "cpu", "--arch", "resnet", "--d-state", "2", "--hidden", "4"],
        "unknown architecture",
    );
    assert_fails_with(&["run", "--device", "cpu", "--gamma", "2"], "gamma");
    assert_fails_with(&["run", "--device", "cpu", "--init", "complex-noise:x"], "strength");

    let fixture = fixtures().join("unet.safetensors");
    assert_fails_with(
        &["run", "--device", "cpu", "--weights", fixture.to_str().unwrap(), "--arch", "unet", "--d-state", "3", "--hidden", "8"],
        "--hidden 8 does not match the file: tensor 'inc.conv_block.0.weight' has shape [7, 6, 3, 3]: hidden 7",
    );
    assert_fails_with(
        &["run", "--device", "cpu", "--weights", fixture.to_str().unwrap(), "--arch", "mlp"],
        "--arch mlp does not match the file",
    );

    let corrupt = dir.join("corrupt.pth");
    std::fs::write(&corrupt, b"PK\x03\x04 not really a zip").unwrap();
    assert_fails_with(
        &[
            "run",
            "--device",
            "cpu",
            "--weights",
            corrupt.to_str().unwrap(),
            "--arch",
            "mlp",
            "--d-state",
            "3",
            "--hidden",
            "16",
        ],
        "corrupt.pth",
    );

    let nan_state = dir.join("nan.safetensors");
    let mut state = generate(&InitialState::Random, 1, 8, 8, 8, 0).unwrap();
    state.im.data[17] = f32::INFINITY;
    save_state(&nan_state, &state).unwrap();
    assert_fails_with(&["run", "--device", "cpu", "--init", nan_state.to_str().unwrap()], "non-finite");

    let wrong_channels = dir.join("d3.safetensors");
    save_state(&wrong_channels, &generate(&InitialState::Random, 1, 8, 8, 3, 0).unwrap()).unwrap();
    assert_fails_with(&["run", "--device", "cpu", "--init", wrong_channels.to_str().unwrap()], "d_state 3");
}

#[test]
fn strict_device_turns_a_fallback_into_an_error() {
    assert_fails_with(&["run", "--device", "cuda:999", "--strict-device", "--steps", "1"], "strict");
}

#[test]
fn devices_lists_every_backend() {
    let output = atheria(&["devices"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for backend in ["cuda", "wgpu", "cpu"] {
        assert!(text.lines().any(|l| l.starts_with(backend)), "{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("cpu") && l.contains(" ok ")), "{text}");
}

#[test]
fn eval_says_whether_each_universe_is_alive() {
    let args =
        ["eval", "--device", "cpu", "--grid", "16", "--steps", "40", "--universes", "2", "--seed", "4"];
    let output = atheria(&[&args[..], &["--json"]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let life = report["life"].as_array().expect("one entry per universe");
    assert_eq!(life.len(), 2, "{report}");
    for measures in life {
        for name in ["activity", "structure", "persistence", "score"] {
            let value = measures[name].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&value), "{name} {value} in {measures}");
        }
        assert!(
            measures["period"].is_null() || measures["period"].as_u64().is_some_and(|p| (1..=8).contains(&p))
        );
    }
    let text = atheria(&args);
    let printed = String::from_utf8_lossy(&text.stdout);
    assert!(printed.contains("life score") && printed.contains("over the last 32 states"), "{printed}");
}
