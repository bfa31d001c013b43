"""Bad input raises the exception of its family, with the command line's message."""

import numpy as np
import pytest

import atheria


@pytest.fixture(scope="module")
def sim():
    return atheria.Simulation(atheria.Model.default(), grid=8, device="cpu")


def test_families_are_subclasses_of_atheria_error():
    for cls in (atheria.DeviceError, atheria.ModelError, atheria.StateError, atheria.UsageError,
                atheria.TrainingError, atheria.FileError, atheria.OutOfMemoryError):
        assert issubclass(cls, atheria.AtheriaError)


def test_a_missing_model_is_a_file_error(tmp_path):
    with pytest.raises(atheria.FileError, match="nothing: model directory not found"):
        atheria.Model.load(str(tmp_path / "nothing"))


def test_an_unknown_architecture_names_the_choices():
    with pytest.raises(atheria.ModelError, match="unknown architecture 'resnet'.*unet"):
        atheria.Model.untrained("resnet", d_state=2, hidden=4)


def test_an_unknown_device(sim):
    with pytest.raises(atheria.DeviceError, match="unknown device 'tpu'"):
        atheria.Simulation(atheria.Model.default(), grid=8, device="tpu")


@pytest.mark.parametrize("value", ["5s", "0", "-3"])
def test_a_bad_probe_time_limit_is_a_device_error(monkeypatch, value):
    monkeypatch.setenv("ATHERIA_PROBE_TIMEOUT", value)
    with pytest.raises(atheria.DeviceError, match="ATHERIA_PROBE_TIMEOUT"):
        atheria.Simulation(atheria.Model.default(), grid=8, device="cpu")
    with pytest.raises(atheria.DeviceError, match="whole number of seconds"):
        atheria.devices()


def test_a_grid_the_unet_cannot_pool():
    model = atheria.Model.untrained("unet", d_state=2, hidden=4)
    with pytest.raises(atheria.StateError, match="grid 10x10"):
        atheria.Simulation(model, grid=10, device="cpu")


def test_states_are_validated(sim):
    d = sim.model.d_state
    with pytest.raises(atheria.StateError, match="non-finite"):
        bad = np.ones((1, 8, 8, d), dtype=np.complex64)
        bad[0, 1, 2, 0] = np.nan
        sim.set_psi(bad)
    with pytest.raises(atheria.StateError, match="needs"):
        sim.set_psi(np.ones((1, 8, 4, d), dtype=np.complex64))
    with pytest.raises(atheria.StateError, match="4 dimensions"):
        sim.set_psi(np.ones((8, 8, d), dtype=np.complex64))
    with pytest.raises(atheria.StateError, match="dtype"):
        sim.set_psi(np.ones((1, 8, 8, d), dtype=np.int32))
    # Nothing changed after the refusals.
    assert np.isfinite(sim.psi).all()


def test_tools_and_views_are_validated(sim):
    with pytest.raises(atheria.UsageError, match="unknown tool"):
        sim.apply("teleport:x=1")
    with pytest.raises(atheria.UsageError):
        sim.apply("vortex:x=1,y=1,radius=-2")
    with pytest.raises(atheria.UsageError, match="unknown view"):
        sim.view("colour")


def test_a_request_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(atheria.OutOfMemoryError, match="needs about"):
        atheria.Simulation(atheria.Model.default(), grid=(1 << 16, 1 << 16), batch=64, device="cpu")


@pytest.mark.parametrize("kwargs", [{"grid": -4}, {"grid": (8, 0)}, {"grid": "big"}, {"batch": 0}, {"batch": 1.5}, {"seed": -1}])
def test_bad_sizes_are_usage_errors(kwargs):
    with pytest.raises(atheria.UsageError):
        atheria.Simulation(atheria.Model.default(), device="cpu", **kwargs)


def test_bad_step_counts_are_usage_errors(sim):
    with pytest.raises(atheria.UsageError):
        sim.step(-1)
    with pytest.raises(atheria.UsageError):
        sim.step(2.5)
