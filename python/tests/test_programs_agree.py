"""The Python `Simulation` steps the same universe as `atheria run`, bit for bit on the CPU
backend, for every kind of start and with one-shot and per-step tools (the live lab is held to
the same states by tests/engine/programs_agree.rs). Needs the release binary the Rust suite
builds (`CARGO_TARGET_DIR`, else the repository's `target/`)."""

import os
import subprocess

import numpy as np
import pytest

import atheria
from conftest import read_safetensors, write_state

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
STEPS = 3
VORTEX = "vortex:x=5,y=6,radius=4,m=1"
CLICK_OUT = "click-out:chance=0.5,seed=1"


def binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "atheria")
    assert os.path.exists(path), f"no atheria binary at {path}: run `cargo build --release` first"
    return path


def start_file(tmp_path):
    rng = np.random.default_rng(11)
    psi = (rng.standard_normal((1, 8, 8, 8)) + 1j * rng.standard_normal((1, 8, 8, 8))).astype(np.complex64)
    psi /= np.linalg.norm(psi, axis=-1, keepdims=True)
    path = tmp_path / "start.safetensors"
    write_state(path, psi)
    return str(path)


def cases(tmp_path, fixtures):
    file = start_file(tmp_path)
    mlp = os.path.join(fixtures, "pytorch", "mlp.pth")
    convlstm = os.path.join(fixtures, "unet-convlstm.safetensors")
    lab = lambda name: os.path.join(fixtures, "lab", name)  # noqa: E731
    # (name, weights or None for the shipped model, init, grid or None, tools)
    return [
        ("random", None, "random", (16, 16), True),
        ("noise", None, "complex-noise:0.2", (16, 12), False),
        ("zeros", None, "zeros", (8, 8), True),
        ("file", None, file, None, False),
        ("tiled", None, file, (16, 24), True),
        ("lab-snapshot", mlp, lab("snapshot.pt"), None, True),
        ("convlstm-memory", convlstm, lab("convlstm_state.pt"), None, False),
    ]


@pytest.mark.parametrize("index", range(7))
def test_python_and_run_step_the_same_universe(tmp_path, fixtures, index):
    name, weights, init, grid, tools = cases(tmp_path, fixtures)[index]
    model = atheria.Model.import_checkpoint(weights) if weights else atheria.Model.default()
    sim = atheria.Simulation(model, grid=grid, init=init, seed=3, device="cpu")
    start = sim.step_count
    if tools:
        sim.apply(VORTEX)
        sim.apply(CLICK_OUT)
    sim.step(STEPS)

    out = tmp_path / "run.safetensors"
    args = [binary(), "run", "--device", "cpu", "--steps", str(start + STEPS), "--init", init, "--seed", "3"]
    args += ["--save-state", str(out)]
    if weights:
        args += ["--weights", weights]
    if grid:
        args += ["--grid", f"{grid[0]}x{grid[1]}"]
    if tools:
        for tool in (VORTEX, CLICK_OUT):
            args += ["--tool", tool, "--tool-at", str(start)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{name}: {done.stderr}"
    tensors, metadata = read_safetensors(str(out))
    want = tensors["re"] + 1j * tensors["im"]
    assert sim.step_count == start + STEPS
    assert sim.psi.shape == want.shape, name
    np.testing.assert_array_equal(sim.psi, want.astype(np.complex64), err_msg=name)
