"""`atheria.native`, the drop-in for the lab's `atheria_core`: its names and signatures, and
the DenseEngine's step against the lab's C++ step written in PyTorch
(scripts/make_python_fixtures.py)."""

import inspect
import os

import numpy as np
import pytest

import atheria
import atheria.native as atheria_core
from conftest import read_safetensors, relative_error


def as_numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def test_the_names_the_lab_wrapper_uses():
    for name in ("get_version", "has_torch_support", "set_num_threads", "get_max_threads", "Coord3D", "DenseEngine", "Engine"):
        assert hasattr(atheria_core, name), name
    assert atheria_core.get_version() == atheria.__version__
    assert atheria_core.has_torch_support() is True
    assert atheria_core.get_max_threads() >= 1
    assert list(inspect.signature(atheria_core.DenseEngine).parameters) == ["grid_size", "d_state", "device", "device_str"]
    assert list(inspect.signature(atheria_core.Engine).parameters) == ["d_state", "device", "grid_size", "device_str"]
    c = atheria_core.Coord3D(1, 2, 0)
    c.x = 5
    assert (c.x, c.y, c.z) == (5, 2, 0) and repr(c) == "Coord3D(5, 2, 0)"


def test_dense_engine_steps_as_the_lab_native_engine(fixtures):
    reference, meta = read_safetensors(os.path.join(fixtures, "lab", "dense_engine_reference.safetensors"))
    want = {s: reference[f"psi{s}_re"] + 1j * reference[f"psi{s}_im"] for s in (0, 1, 3)}
    _, d_state, height, width = want[0].shape
    engine = atheria_core.DenseEngine(grid_size=height, d_state=d_state, device="cpu")
    assert engine.step() == 0  # no model: nothing happens, as in the lab
    assert np.abs(as_numpy(engine.get_state())).max() == 0
    assert engine.load_model(os.path.join(fixtures, "lab", "unet_traced.pt"))
    engine.set_state(want[0].astype(np.complex64))
    assert engine.step() == height * width
    assert relative_error(as_numpy(engine.get_state()), want[1]) <= 1e-5
    engine.step()
    engine.step()
    got = as_numpy(engine.get_state())
    assert got.shape == (1, d_state, height, width) and got.dtype == np.complex64
    assert relative_error(got, want[3]) <= 1e-4
    assert relative_error(want[0], want[3]) > 0.1
    assert engine.get_step_count() == 3


def test_dense_engine_refuses_what_it_cannot_load(tmp_path, capsys):
    engine = atheria_core.DenseEngine(8, 2)
    assert engine.load_model(str(tmp_path / "missing.pt")) is False
    assert "Error loading model" in capsys.readouterr().err
    assert engine.apply_tool("vortex", {"x": 1.0}) is False  # nothing on a device yet
    with pytest.raises(atheria.StateError):
        engine.set_state(np.zeros((1, 3, 8, 8), dtype=np.complex64))
    # Without a model the state is kept here, and checked here; the old one stays.
    nan = np.zeros((1, 2, 8, 8), dtype=np.complex64)
    nan[0, 1, 2, 3] = np.nan
    with pytest.raises(atheria.StateError, match="1 non-finite"):
        engine.set_state(nan)
    assert np.isfinite(as_numpy(engine.get_state())).all()


def test_sparse_engine_places_reads_and_steps_particles(fixtures):
    engine = atheria_core.Engine(d_state=2, device="cpu", grid_size=16)
    assert engine.step_native() == 0 and engine.get_step_count() == 1  # no model: time passes
    # All in channel 0: far from the vacuum's even spread, so it is matter and kept.
    state = np.array([1.0j, 0.0], dtype=np.complex64)
    engine.add_particle(atheria_core.Coord3D(3, 4, 0), state)
    assert np.allclose(as_numpy(engine.get_state_at(atheria_core.Coord3D(3, 4, 0))), state, atol=1e-6)
    assert engine.get_matter_count() >= 1
    assert atheria_core.Coord3D(2, 3, 0) in engine.get_active_coords()
    assert [repr(c) for c in engine.query_radius(atheria_core.Coord3D(0, 0, 0), 5)] == ["Coord3D(3, 4, 0)"]
    density = as_numpy(engine.compute_visualization("density"))
    assert density.shape == (16, 16) and abs(density[4, 3] - 1.0) < 1e-5
    with pytest.raises(atheria.UsageError, match="z must be 0"):
        engine.get_state_at(atheria_core.Coord3D(0, 0, 1))
    assert engine.load_model(os.path.join(fixtures, "missing.pth")) is False
    assert "missing.pth" in engine.get_last_error()
    # A law (the mlp fixture, d_state 3) steps a universe of its d_state; another d_state is refused.
    assert engine.load_model(os.path.join(fixtures, "pytorch", "mlp.pth")) is False
    assert "d_state" in engine.get_last_error()
    engine3 = atheria_core.Engine(d_state=3, device="cpu", grid_size=16)
    assert engine3.load_model(os.path.join(fixtures, "pytorch", "mlp.pth")), engine3.get_last_error()
    engine3.add_particle(atheria_core.Coord3D(8, 8, 0), np.array([1, 0, 0], dtype=np.complex64))
    before = as_numpy(engine3.get_state_at(atheria_core.Coord3D(8, 8, 0)))
    engine3.step_native()
    after = as_numpy(engine3.get_state_at(atheria_core.Coord3D(8, 8, 0)))
    assert engine3.get_step_count() == 1 and not np.allclose(before, after)
    assert abs(np.sum(np.abs(after) ** 2) - 1.0) < 1e-4
    engine.clear()
    assert engine.get_matter_count() == 0 and engine.get_step_count() == 0 and engine.get_active_coords() == []
