//! `atheria run` with tools, views, a GIF and metrics, through the binary.

use atheria::io::state_file::load_state;
use atheria::state::{generate, InitialState, Universe};
use atheria::tools::Tool;
use burn::backend::NdArray;
use image::AnimationDecoder;

use crate::support::{assert_fails_with, atheria, relative_error, scratch, stderr};

#[test]
fn a_tool_at_step_zero_acts_on_the_initial_state() {
    let dir = scratch("pictures-tool-zero");
    let state = dir.join("out.safetensors");
    let spec = "wave:kx=0.8,ky=0.3,amplitude=1";
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "12",
        "--steps",
        "0",
        "--seed",
        "3",
        "--tool",
        spec,
        "--tool-at",
        "0",
        "--save-state",
        state.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The same tool applied in the library to the same seeded initial state.
    let host = generate(&InitialState::Random, 1, 12, 12, 8, 3).unwrap();
    let psi = Universe::<NdArray>::from_host(&host, &Default::default()).psi;
    let expected = Universe::<NdArray>::new(spec.parse::<Tool>().unwrap().apply(psi, 0).unwrap());
    let expected = expected.to_host().unwrap();
    let saved = load_state(&state).unwrap();
    let join = |s: &atheria::io::state_file::HostState| [s.re.data.clone(), s.im.data.clone()].concat();
    assert!(relative_error(&join(&saved), &join(&expected)) < 1e-7);
    // And it changed something.
    assert!(relative_error(&join(&saved), &join(&host)) > 0.1);
}

#[test]
fn frames_panels_gif_and_metrics() {
    let dir = scratch("pictures-run");
    let frames = dir.join("frames");
    let gif = dir.join("run.gif");
    let metrics = dir.join("metrics.csv");
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "16x20",
        "--steps",
        "4",
        "--every",
        "2",
        "--tool",
        "vortex:x=10,y=8,radius=6,m=1",
        "--tool-at",
        "0",
        "--tool",
        "collapse:radius=3,intensity=1",
        "--tool-at",
        "2",
        "--tool",
        "click-out:chance=1",
        "--frames",
        frames.to_str().unwrap(),
        "--view",
        "density,phase,entropy",
        "--gif",
        gif.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    let mut names: Vec<String> =
        std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["frame_000000.png", "frame_000002.png", "frame_000004.png"]);
    // Three views side by side: each map is 20 wide scaled to >= 256 pixels.
    let panel = image::open(frames.join("frame_000002.png")).unwrap().to_rgb8();
    assert!(
        panel.width() >= 3 * 256 && panel.width() > 2 * panel.height(),
        "{}x{}",
        panel.width(),
        panel.height()
    );

    let file = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
    let decoder = image::codecs::gif::GifDecoder::new(file).unwrap();
    let gif_frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(gif_frames.len(), 3);
    assert_eq!(gif_frames[0].buffer().dimensions(), panel.dimensions());

    let csv = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,universe,total_energy,mean_entropy,cells_above");
    assert_eq!(lines.len(), 1 + 5, "{csv}");
    for (step, line) in lines[1..].iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], step.to_string());
        assert_eq!(fields[1], "0");
        let energy: f64 = fields[2].parse().unwrap();
        let entropy: f64 = fields[3].parse().unwrap();
        let above: usize = fields[4].parse().unwrap();
        assert_eq!(energy == 0.0, step == 0, "{line}");
        assert!((0.0..=1.0).contains(&entropy), "{line}");
        // Normalised cells have density 1 > 0.5.
        assert_eq!(above, 16 * 20, "{line}");
    }
}

#[test]
fn one_view_per_frame_draws_the_map_alone() {
    let dir = scratch("pictures-one-view");
    let frames = dir.join("frames");
    for view in ["phase", "physics", "energy", "coherence", "activity"] {
        let picture = first_frame_of_view(view, &frames);
        assert_eq!((picture.width(), picture.height()), (256, 256), "{view}");
    }
    // A constant map is never a silent flat square: it is drawn with its label, so the picture
    // is taller than the map. The density of a normalised state is 1 everywhere, so its
    // gradient is 0 and its spectrum (DC removed) flat.
    for view in ["density", "gradient", "spectral"] {
        let picture = first_frame_of_view(view, &frames);
        assert!(
            picture.height() > 256 && picture.width() >= 256,
            "{view}: {}x{}",
            picture.width(),
            picture.height()
        );
    }
}

/// The first frame of a one-step 16x16 run drawing `view` into `frames`.
fn first_frame_of_view(view: &str, frames: &std::path::Path) -> image::DynamicImage {
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--grid",
        "16",
        "--steps",
        "1",
        "--view",
        view,
        "--frames",
        frames.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{view}: {}", stderr(&output));
    image::open(frames.join("frame_000001.png")).unwrap()
}

#[test]
fn bad_tool_and_view_flags_fail_with_one_line() {
    let run = ["run", "--device", "cpu", "--grid", "8", "--steps", "2"];
    fn with<'a>(run: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [run, extra].concat()
    }
    assert_fails_with(&with(&run, &["--tool", "swirl"]), "unknown tool 'swirl'");
    assert_fails_with(&with(&run, &["--tool", "vortex:q=1"]), "valid keys: x, y, radius, m, strength");
    assert_fails_with(&with(&run, &["--tool", "vortex:radius=-1"]), "radius must be positive");
    assert_fails_with(&with(&run, &["--tool", "collapse:x=8"]), "outside the 8x8 grid");
    assert_fails_with(&with(&run, &["--tool", "wave", "--tool-at", "3"]), "after the last step (2)");
    assert_fails_with(&with(&run, &["--tool-at", "1"]), "1 --tool-at for 0 --tool");
    assert_fails_with(&with(&run, &["--view", "density,colour"]), "unknown view 'colour'");
}
