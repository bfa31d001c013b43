//! No lost work: signals stop at a step boundary and write what was asked, run checkpoints
//! resume bit for bit, a `kill -9` leaves a loadable checkpoint, impossible requests are
//! refused before allocating, and damaged files are caught by their checksums.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use atheria::io::model_dir::{load_model, save_model, CONFIG_FILE, RECORD_FILE};
use atheria::io::run_checkpoint;
use atheria::io::state_file::{load_state, save_state};
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::state::{generate, InitialState};
use atheria::Error;
use burn::backend::NdArray;

use crate::support::{atheria, scratch, spawn, stderr};

type Cpu = NdArray;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([format!("-{name}"), child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Waits until `path` holds more than `lines` lines (the process writes them as it goes).
fn wait_for_lines(child: &mut Child, path: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = std::fs::read_to_string(path).map(|text| text.lines().count()).unwrap_or(0);
        if count > lines {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process ended before writing {lines} lines to {}",
            path.display()
        );
        assert!(Instant::now() < deadline, "no {lines} lines in {} after 120 s", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `N` from "interrupted at step N of M".
fn interrupted_step(text: &str, of: u64) -> u64 {
    let line =
        text.lines().find(|line| line.starts_with("interrupted at step")).unwrap_or_else(|| panic!("{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[5], of.to_string(), "{line}");
    words[3].parse().unwrap()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
fn ctrl_c_stops_a_run_at_a_step_boundary_and_writes_everything_asked() {
    let dir = scratch("sigint-run");
    let (state, metrics, frames, gif, checkpoint) = (
        path(&dir, "s.safetensors"),
        path(&dir, "m.csv"),
        path(&dir, "f"),
        path(&dir, "g.gif"),
        path(&dir, "ck"),
    );
    let mut child = spawn(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "16",
        "--steps",
        "1000000",
        "--every",
        "5",
        "--save-state",
        &state,
        "--metrics",
        &metrics,
        "--frames",
        &frames,
        "--gif",
        &gif,
        "--checkpoint",
        &checkpoint,
    ]);
    // Rows appear while the run goes on: they are flushed as they happen.
    wait_for_lines(&mut child, Path::new(&metrics), 12);
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{text}");
    let step = interrupted_step(&text, 1_000_000);
    assert!(step >= 11, "{text}");

    let saved = load_state(Path::new(&state)).unwrap();
    assert_eq!(saved.step, step);
    let rows = std::fs::read_to_string(&metrics).unwrap();
    let last = rows.lines().last().unwrap();
    assert_eq!(last.split(',').next().unwrap(), step.to_string(), "the last row is the state reached");
    assert_eq!(rows.lines().count() as u64, step + 2, "a header and one row per step 0..=N");
    // Every fifth step and the last one as PNG frames, and a GIF that decodes to as many.
    let pngs = std::fs::read_dir(&frames).unwrap().count() as u64;
    let expected = step / 5 + 1 + u64::from(!step.is_multiple_of(5));
    assert_eq!(pngs, expected);
    let decoder =
        image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&gif).unwrap()))
            .unwrap();
    let gif_frames = image::AnimationDecoder::into_frames(decoder).collect_frames().unwrap();
    assert_eq!(gif_frames.len() as u64, expected);
    // The checkpoint was written at the interruption.
    assert_eq!(run_checkpoint::load(Path::new(&checkpoint)).unwrap().state.step, step);
}

#[test]
fn a_second_ctrl_c_ends_the_process_at_once() {
    let dir = scratch("sigint-twice");
    let (state, metrics) = (path(&dir, "s.safetensors"), path(&dir, "m.csv"));
    // 512x512 steps take long enough that the first signal waits for the boundary.
    let mut child = spawn(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "512",
        "--steps",
        "100",
        "--save-state",
        &state,
        "--metrics",
        &metrics,
    ]);
    wait_for_lines(&mut child, Path::new(&metrics), 1);
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(20));
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{text}");
    assert!(!text.contains("interrupted at step"), "the second signal did not wait for the step: {text}");
    assert!(!Path::new(&state).exists());
}

#[test]
fn sigterm_stops_training_with_a_checkpoint_that_resumes_exactly() {
    let dir = scratch("sigterm-train");
    let (out, straight) = (dir.join("run"), dir.join("straight"));
    let train = [
        "train",
        "--device",
        "cpu",
        "--arch",
        "mlp",
        "--d-state",
        "2",
        "--hidden",
        "4",
        "--grid",
        "8",
        "--qca-steps",
        "2",
        "--quiet",
    ];
    let mut child = spawn(&[&train[..], &["--episodes", "1000000", "--out", out.to_str().unwrap()]].concat());
    wait_for_lines(&mut child, &out.join("metrics.csv"), 3);
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(143), "{text}");
    let episode = interrupted_step(&text, 1_000_000);
    let last =
        atheria::training::checkpoint::resolve(&out, "last").expect("a checkpoint at the interruption");
    assert!(last.ends_with(atheria::training::checkpoint::checkpoint_name(episode)), "{}", last.display());

    // Resumed to two more episodes, it equals a run that was never interrupted.
    let total = (episode + 2).to_string();
    let resumed = atheria(&[
        "train",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--episodes",
        &total,
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let fresh = atheria(&[&train[..], &["--episodes", &total, "--out", straight.to_str().unwrap()]].concat());
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    // The same weights: the same 5-step rollout, bit for bit (records differ in parameter ids).
    let rollout = |run: &Path| {
        let dir = atheria::training::checkpoint::resolve(run, "last").unwrap();
        let model = load_model::<Cpu>(&dir, &Default::default()).unwrap();
        let host = generate(&InitialState::Random, 1, 8, 8, 2, 9).unwrap();
        let universe = atheria::Universe::<Cpu>::from_host(&host, &Default::default());
        let mut simulation = atheria::Simulation::new(model, universe, 0.01).unwrap();
        atheria::dynamics::advance(&mut simulation, 5);
        simulation.universe.to_host().unwrap()
    };
    assert!(rollout(&out) == rollout(&straight), "resumed training differs from the uninterrupted run");
}

/// A run with a ConvLSTM memory, a one-shot vortex, a per-step click-out and phase-flip noise.
const TOOLED_RUN: [&str; 19] = [
    "run",
    "--device",
    "cpu",
    "--arch",
    "unet-convlstm",
    "--d-state",
    "2",
    "--hidden",
    "4",
    "--grid",
    "16",
    "--tool",
    "vortex:x=8,y=8,radius=4",
    "--tool",
    "click-out:chance=0.5,seed=3",
    "--tool",
    "phase-flip:rate=0.3,seed=5",
    "--tool-at",
    "9",
];

#[test]
fn a_checkpointed_run_resumes_bit_for_bit_with_tools_noise_and_memory() {
    let dir = scratch("run-resume");
    let (full, resumed, checkpoint) =
        (path(&dir, "full.safetensors"), path(&dir, "resumed.safetensors"), path(&dir, "ck"));
    let straight = atheria(
        &[&TOOLED_RUN[..], &["--tool-at", "2", "--tool-at", "6", "--steps", "20", "--save-state", &full]]
            .concat(),
    );
    assert!(straight.status.success(), "{}", stderr(&straight));
    // The same run stopped after 11 steps (checkpoints at 0, 4, 8 and its end), then continued.
    let first = atheria(
        &[
            &TOOLED_RUN[..],
            &[
                "--tool-at",
                "2",
                "--tool-at",
                "6",
                "--steps",
                "11",
                "--checkpoint",
                &checkpoint,
                "--checkpoint-every",
                "4",
            ],
        ]
        .concat(),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let saved = run_checkpoint::load(Path::new(&checkpoint)).unwrap();
    assert_eq!(saved.state.step, 11);
    assert!(saved.state.memory.is_some(), "the ConvLSTM memory is part of the checkpoint");
    let second = atheria(&["run", "--resume", &checkpoint, "--steps", "20", "--save-state", &resumed]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("from step 11"), "{}", stderr(&second));
    let (a, b) = (load_state(Path::new(&full)).unwrap(), load_state(Path::new(&resumed)).unwrap());
    assert_eq!(a.step, 20);
    assert!(a == b, "the resumed run differs from the uninterrupted one");

    // Flags that would change the trajectory are refused; --steps below the saved step too.
    let refused = atheria(&["run", "--resume", &checkpoint, "--grid", "32"]);
    assert!(!refused.status.success() && stderr(&refused).contains("drop --grid"), "{}", stderr(&refused));
    let refused = atheria(&["run", "--resume", &checkpoint, "--steps", "5"]);
    assert!(!refused.status.success() && stderr(&refused).contains("at step 20"), "{}", stderr(&refused));
    // A new run does not overwrite a directory that holds one.
    let refused = atheria(&[&TOOLED_RUN[..], &["--steps", "12", "--checkpoint", &checkpoint]].concat());
    assert!(!refused.status.success() && stderr(&refused).contains("--resume"), "{}", stderr(&refused));
}

#[test]
fn a_run_killed_at_any_moment_leaves_a_checkpoint_that_resumes() {
    let dir = scratch("run-kill");
    let checkpoint = path(&dir, "ck");
    let mut args: Vec<String> = [
        "run",
        "--device",
        "cpu",
        "--grid",
        "16",
        "--steps",
        "1000000",
        "--checkpoint",
        &checkpoint,
        "--checkpoint-every",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut previous = 0;
    for (round, wait_ms) in [400u64, 650, 900].into_iter().enumerate() {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn(&refs);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !run_checkpoint::exists(Path::new(&checkpoint)) {
            assert!(child.try_wait().unwrap().is_none());
            assert!(Instant::now() < deadline, "no checkpoint after 120 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL, at whatever instant the run is in
        child.wait().unwrap();
        let saved = run_checkpoint::load(Path::new(&checkpoint)).expect("the checkpoint loads after kill -9");
        assert!(
            saved.state.step >= previous,
            "round {round}: went back from {previous} to {}",
            saved.state.step
        );
        previous = saved.state.step;
        args = ["run", "--resume", &checkpoint, "--steps", "1000000"].iter().map(|s| s.to_string()).collect();
    }
    let total = (previous + 2).to_string();
    let finished = atheria(&["run", "--resume", &checkpoint, "--steps", &total]);
    assert!(finished.status.success(), "{}", stderr(&finished));
    assert_eq!(run_checkpoint::load(Path::new(&checkpoint)).unwrap().state.step, previous + 2);
}

#[test]
fn impossible_requests_are_refused_before_allocating() {
    for args in [
        &["run", "--device", "cpu", "--grid", "40000"][..],
        &["run", "--device", "cpu", "--grid", "64", "--batch", "100000000"][..],
        &[
            "train",
            "--device",
            "cpu",
            "--grid",
            "20000",
            "--episodes",
            "1",
            "--out",
            "/nonexistent/never-written",
        ][..],
        &["eval", "--device", "cpu", "--grid", "40000"][..],
    ] {
        let started = Instant::now();
        let output = atheria(args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        let line = text.lines().last().unwrap();
        assert!(
            line.starts_with("error: ") && line.contains("needs about") && line.contains("available"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("panicked") && !text.contains("memory allocation"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(60), "{args:?} took {:?}", started.elapsed());
    }
}

fn small_model_dir(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    let model =
        Model::<Cpu>::seeded(ModelConfig::new(Architecture::Unet, 2, 4), 1, &Default::default()).unwrap();
    save_model(&dir, &model).unwrap();
    dir
}

#[test]
fn a_flipped_or_truncated_model_record_is_a_checksum_error() {
    let dir = small_model_dir("flip-record");
    let record = std::fs::read(dir.join(RECORD_FILE)).unwrap();
    for position in [record.len() / 3, record.len() / 2, record.len() - 5] {
        let mut flipped = record.clone();
        flipped[position] ^= 0x10;
        std::fs::write(dir.join(RECORD_FILE), &flipped).unwrap();
        let error = load_model::<Cpu>(&dir, &Default::default()).unwrap_err();
        assert!(matches!(error, Error::ChecksumMismatch { .. }), "byte {position}: {error}");
        assert!(error.to_string().contains(RECORD_FILE), "{error}");
    }
    std::fs::write(dir.join(RECORD_FILE), &record[..record.len() / 2]).unwrap();
    assert!(matches!(load_model::<Cpu>(&dir, &Default::default()), Err(Error::ChecksumMismatch { .. })));

    // An older directory without the checksum loads; truncated, it is our own message.
    std::fs::write(dir.join(RECORD_FILE), &record).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    let mut config = config.as_object().unwrap().clone();
    assert!(config.remove("record_sha256").is_some());
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&config).unwrap()).unwrap();
    load_model::<Cpu>(&dir, &Default::default()).expect("a directory without checksum loads");
    std::fs::write(dir.join(RECORD_FILE), &record[..record.len() / 2]).unwrap();
    let error = load_model::<Cpu>(&dir, &Default::default()).unwrap_err().to_string();
    assert!(error.contains("truncated or corrupt model record") && !error.contains("0.14"), "{error}");
}

#[test]
fn a_flipped_state_file_is_a_checksum_error() {
    let dir = scratch("flip-state");
    let file = dir.join("s.safetensors");
    let state = generate(&InitialState::Random, 1, 8, 8, 3, 2).unwrap();
    save_state(&file, &state).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    // The lowest exponent bit of the last float: still a finite value, silently wrong without
    // the checksum.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 4;
    flipped[last] ^= 0x01;
    std::fs::write(&file, &flipped).unwrap();
    let error = load_state(&file).unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { .. }), "{error}");
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(load_state(&file).unwrap(), state);
}
