"""The Pythonic API against PyTorch's trajectories, and its views, tools and state."""

import os

import numpy as np
import pytest

import atheria
from conftest import read_safetensors, relative_error, write_state


def unet_fixture(fixtures):
    tensors, meta = read_safetensors(os.path.join(fixtures, "unet_trajectory.safetensors"))
    model = atheria.Model.import_checkpoint(
        os.path.join(fixtures, "unet.safetensors"), arch="unet", d_state=int(meta["d_state"]), hidden=int(meta["hidden"])
    )
    states = {step: tensors[f"psi{step}_re"] + 1j * tensors[f"psi{step}_im"] for step in (0, 1, 20)}
    return model, float(meta["gamma"]), states


def test_steps_match_pytorch(fixtures):
    model, gamma, states = unet_fixture(fixtures)
    batch, height, width, _ = states[0].shape
    sim = atheria.Simulation(model, grid=(height, width), batch=batch, device="cpu", gamma=gamma)
    sim.set_psi(states[0])
    assert sim.step() == 1
    assert relative_error(sim.psi, states[1]) <= 1e-5
    assert sim.step(19) == 20
    assert relative_error(sim.psi, states[20]) <= 1e-3
    # The reference moved: the comparison says something.
    assert relative_error(states[0], states[20]) > 0.5


def test_psi_is_a_copy_with_the_documented_layout():
    sim = atheria.Simulation(atheria.Model.default(), grid=(8, 12), batch=2, seed=3, device="cpu")
    psi = sim.psi
    assert psi.dtype == np.complex64 and psi.shape == (2, 8, 12, sim.model.d_state)
    # Every cell of the initial state is normalised.
    assert np.allclose(np.sum(np.abs(psi) ** 2, axis=-1), 1.0, atol=1e-5)
    psi[:] = 0
    assert np.abs(sim.psi).max() > 0


def test_views_have_the_batch_shape_and_the_density_is_one():
    sim = atheria.Simulation(atheria.Model.default(), grid=8, batch=3, device="cpu")
    sim.step(2)
    density = sim.view("density")
    assert density.shape == (3, 8, 8) and density.dtype == np.float32
    assert np.allclose(density, 1.0, atol=1e-5)
    phase = sim.view("phase")
    assert np.all(np.abs(phase) <= np.pi + 1e-6)


def test_a_vortex_imprints_its_phase_winding():
    d_state = atheria.Model.default().d_state
    sim = atheria.Simulation(atheria.Model.default(), grid=32, device="cpu")
    flat = np.ones((1, 32, 32, d_state), dtype=np.complex64) / np.sqrt(d_state)
    sim.set_psi(flat)
    sim.apply("vortex:x=16,y=16,radius=12,m=1")
    after = sim.psi[0, :, :, 0]
    # Around the centre the phase winds once: the sum of the phase steps on a ring is 2 pi.
    ring = [after[16 + int(round(6 * np.sin(t))), 16 + int(round(6 * np.cos(t)))] for t in np.linspace(0, 2 * np.pi, 64)]
    steps = np.angle(np.array(ring[1:]) / np.array(ring[:-1]))
    assert abs(abs(steps.sum()) - 2 * np.pi) < 0.3
    # Outside the disc nothing changed.
    assert np.allclose(sim.psi[0, 0, 0], flat[0, 0, 0], atol=1e-6)


def test_gamma_and_step_count():
    sim = atheria.Simulation(atheria.Model.default(), grid=8, device="cpu", gamma=0.02)
    assert sim.gamma == pytest.approx(0.02)
    sim.gamma = 0.0
    assert sim.gamma == 0.0
    assert sim.step_count == 0
    sim.step(3)
    assert sim.step_count == 3
    assert "running on cpu" in sim.device_report


def test_untrained_models_are_seeded():
    a = atheria.Model.untrained("mlp", d_state=2, hidden=8, seed=1)
    b = atheria.Model.untrained("mlp", d_state=2, hidden=8, seed=1)
    run = lambda model: atheria.Simulation(model, grid=8, seed=2, device="cpu").step(2)
    sims = [atheria.Simulation(m, grid=8, seed=2, device="cpu") for m in (a, b)]
    for sim in sims:
        sim.step(2)
    assert np.array_equal(sims[0].psi, sims[1].psi)
    assert a.arch == "mlp" and a.d_state == 2 and a.hidden == 8 and a.num_params > 0


def test_sparse_universe_round_trips_a_region():
    model = atheria.Model.untrained("mlp", d_state=2, hidden=8, seed=0)
    universe = atheria.SparseUniverse(model, device="cpu", tile=16)
    rng = np.random.default_rng(0)
    blob = (rng.normal(size=(5, 7, 2)) + 1j * rng.normal(size=(5, 7, 2))).astype(np.complex64)
    blob /= np.linalg.norm(blob, axis=-1, keepdims=True)
    bad = blob.copy()
    bad[1, 1, 0] = np.inf
    with pytest.raises(atheria.StateError, match="non-finite"):
        universe.from_dense(bad, x=-3, y=30)
    assert universe.stored_tiles == []
    universe.from_dense(blob, x=-3, y=30)
    assert np.allclose(universe.to_dense(-3, 30, 7, 5), blob, atol=1e-6)
    # The region crosses tiles (-1, 1), (0, 1) and (0, 2)... only tiles with matter are stored.
    assert set(universe.stored_tiles) <= {(-1, 1), (0, 1), (-1, 2), (0, 2)}
    assert universe.matter_cells > 0
    universe.step(2)
    assert universe.step_count == 2
    universe.clear()
    assert universe.stored_tiles == [] and universe.step_count == 0


def test_wgpu_agrees_with_the_cpu_backend():
    # Software Vulkan (lavapipe) on CI machines; strict: a wgpu that cannot start fails here.
    runs = []
    for device in ("wgpu", "cpu"):
        sim = atheria.Simulation(atheria.Model.default(), grid=16, seed=1, device=device, strict=True)
        assert f"running on {device}" in sim.device_report
        sim.step(3)
        runs.append(sim.psi)
    assert relative_error(runs[0], runs[1]) <= 1e-4


def test_a_state_file_starts_the_simulation_and_is_tiled_over_a_larger_grid(tmp_path, fixtures):
    rng = np.random.default_rng(4)
    psi = (rng.standard_normal((1, 4, 4, 8)) + 1j * rng.standard_normal((1, 4, 4, 8))).astype(np.complex64)
    psi /= np.linalg.norm(psi, axis=-1, keepdims=True)
    path = tmp_path / "start.safetensors"
    write_state(path, psi)
    sim = atheria.Simulation(atheria.Model.default(), init=str(path), device="cpu")
    np.testing.assert_array_equal(sim.psi, psi)
    tiled = atheria.Simulation(atheria.Model.default(), grid=8, init=str(path), device="cpu")
    np.testing.assert_array_equal(tiled.psi, np.tile(psi, (1, 2, 2, 1)))
    # The lab's saved state (torch.save of a complex psi) starts a simulation too.
    law = atheria.Model.import_checkpoint(os.path.join(fixtures, "pytorch", "mlp.pth"))
    lab = atheria.Simulation(law, init=os.path.join(fixtures, "lab", "snapshot.pt"), device="cpu")
    assert lab.shape == (1, 16, 20, 3)
    with pytest.raises(atheria.FileError, match="d_state 8 but the model expects 3"):
        atheria.Simulation(law, init=str(path), device="cpu")
