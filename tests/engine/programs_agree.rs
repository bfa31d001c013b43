//! One universe description through `atheria run` and through the live lab (over its
//! WebSocket) gives the same state, bit for bit, on the CPU backend: for every kind of start
//! (generated, a state file, one tiled over a larger grid, the lab's `.pt` snapshots, a ConvLSTM
//! law with its memory) and with one-shot and per-step tools. The Python `Simulation` is held
//! to the same states by python/tests/test_programs_agree.py.

use std::path::PathBuf;

use atheria::io::state_file::{load_state, save_state, HostState};
use atheria::state::{generate, InitialState};
use serde_json::json;

use crate::serve::{runtime, Client, Server};
use crate::support::{atheria, fixtures, scratch};

const STEPS: u64 = 3;
const SEED: &str = "3";
const VORTEX: &str = "vortex:x=5,y=6,radius=4,m=1";
const CLICK_OUT: &str = "click-out:chance=0.5,seed=1";

/// A universe description: the model's flags, the start and the grid (the start's own if none).
struct Case {
    name: &'static str,
    model: Vec<String>,
    init: String,
    grid: Option<&'static str>,
    tools: bool,
}

fn cases() -> Vec<Case> {
    let dir = scratch("programs-agree");
    let file = dir.join("start.safetensors");
    save_state(&file, &generate(&InitialState::Random, 1, 8, 8, 8, 11).unwrap()).unwrap();
    let file = file.to_str().unwrap().to_string();
    let lab = |name: &str| fixtures().join("lab").join(name).to_str().unwrap().to_string();
    let weights = |path: PathBuf| vec!["--weights".to_string(), path.to_str().unwrap().to_string()];
    let default = Vec::new;
    vec![
        Case { name: "random", model: default(), init: "random".into(), grid: Some("16"), tools: true },
        Case {
            name: "noise",
            model: default(),
            init: "complex-noise:0.2".into(),
            grid: Some("16x12"),
            tools: false,
        },
        Case { name: "zeros", model: default(), init: "zeros".into(), grid: Some("8"), tools: true },
        Case { name: "file", model: default(), init: file.clone(), grid: None, tools: false },
        Case { name: "tiled", model: default(), init: file, grid: Some("16x24"), tools: true },
        Case {
            name: "lab-snapshot",
            model: weights(fixtures().join("pytorch/mlp.pth")),
            init: lab("snapshot.pt"),
            grid: None,
            tools: true,
        },
        Case {
            name: "convlstm-memory",
            model: weights(fixtures().join("unet-convlstm.safetensors")),
            init: lab("convlstm_state.pt"),
            grid: None,
            tools: false,
        },
    ]
}

impl Case {
    /// The step count the start is at (a lab snapshot keeps its own).
    fn start(&self) -> u64 {
        load_state(std::path::Path::new(&self.init)).map_or(0, |state| state.step)
    }

    /// The flags both programs take for it.
    fn flags(&self) -> Vec<String> {
        let mut flags = self.model.clone();
        flags.extend(["--init".to_string(), self.init.clone(), "--seed".into(), SEED.into()]);
        if let Some(grid) = self.grid {
            flags.extend(["--grid".to_string(), grid.to_string()]);
        }
        flags
    }

    fn by_run(&self) -> HostState {
        let out = scratch(&format!("programs-agree-run-{}", self.name)).join("state.safetensors");
        // `--steps` is the step count to reach, tools act at the start's count.
        let (start, until) = (self.start().to_string(), (self.start() + STEPS).to_string());
        let mut args: Vec<String> = ["run", "--device", "cpu", "--steps", &until].map(String::from).to_vec();
        args.extend(self.flags());
        args.extend(["--save-state".to_string(), out.to_str().unwrap().to_string()]);
        if self.tools {
            for tool in [VORTEX, CLICK_OUT] {
                args.extend(["--tool".to_string(), tool.to_string(), "--tool-at".into(), start.clone()]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = atheria(&args);
        assert!(output.status.success(), "{}: {}", self.name, String::from_utf8_lossy(&output.stderr));
        load_state(&out).unwrap()
    }

    fn by_the_live_lab(&self) -> HostState {
        let flags = self.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = Server::start_with_env(&format!("agree-{}", self.name), &flags, &[]);
        runtime().block_on(async {
            let mut client = Client::connect(server.port, "", None).await.unwrap();
            client.ask(json!({"cmd": "pause"})).await;
            // The lab runs from the start at once; a reset starts the same universe again.
            let start = client.ask(json!({"cmd": "reset"})).await["step"].as_u64().unwrap();
            assert_eq!(start, self.start(), "{}", self.name);
            if self.tools {
                for tool in [VORTEX, CLICK_OUT] {
                    assert_eq!(client.ask(json!({"cmd": "tool", "spec": tool})).await["type"], "ack");
                }
            }
            client.ask(json!({"cmd": "step", "count": STEPS})).await;
            client.frame_at(start + STEPS).await;
            let saved = client.ask(json!({"cmd": "snapshot", "name": "agree"})).await;
            assert_eq!(saved["type"], "snapshot", "{}: {saved}", self.name);
        });
        load_state(&server.snapshots().join("agree.safetensors")).unwrap()
    }
}

#[test]
fn run_and_the_live_lab_step_the_same_universe() {
    for case in cases() {
        let (run, lab) = (case.by_run(), case.by_the_live_lab());
        assert_eq!((run.step, lab.step), (case.start() + STEPS, case.start() + STEPS), "{}", case.name);
        assert_eq!(run.dims(), lab.dims(), "{}", case.name);
        assert!(run.re.data == lab.re.data && run.im.data == lab.im.data, "{}: the states differ", case.name);
        let memory = |state: &HostState| state.memory.as_ref().map(|(h, c)| (h.data.clone(), c.data.clone()));
        assert_eq!(memory(&run), memory(&lab), "{}: the ConvLSTM memories differ", case.name);
        assert_eq!(run.memory.is_some(), case.name == "convlstm-memory", "{}", case.name);
    }
}
