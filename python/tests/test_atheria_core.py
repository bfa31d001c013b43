"""`import atheria_core`: the lab's native module, installed by the wheel beside `atheria`, used
the way the lab's wrapper, its native-module tests and its CUDA fix note use it."""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import atheria
import atheria.native
import atheria_core
from test_device_guard import cuda_install

LAB = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "lab")


def as_numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def parameters(function):
    return list(inspect.signature(function).parameters)


def test_the_module_is_atheria_native_under_the_labs_name():
    assert atheria_core.Engine is atheria.native.Engine
    assert set(atheria_core.__all__) >= {"Coord3D", "DenseEngine", "Engine", "SparseMap", "add", "get_version"}
    # The wheel installs it as a package of its own, not from the source tree.
    assert "site-packages" in atheria_core.__file__, atheria_core.__file__
    assert atheria_core.__version__ == atheria_core.get_version() == atheria.__version__
    assert (atheria_core.VERSION_MAJOR, atheria_core.VERSION_MINOR, atheria_core.VERSION_PATCH) == tuple(
        int(part) for part in atheria.__version__.split(".")
    )


def test_every_binding_of_the_lab_module_exists_with_its_signature():
    assert parameters(atheria_core.add) == ["i", "j"]
    assert parameters(atheria_core.set_num_threads) == ["num_threads"]
    assert parameters(atheria_core.Engine)[:3] == ["d_state", "device", "grid_size"]
    assert parameters(atheria_core.DenseEngine)[:3] == ["grid_size", "d_state", "device"]
    engine = atheria_core.Engine
    for method, names in {
        "load_model": ["model_path"],
        "add_particle": ["coord", "state"],
        "get_state_at": ["coord"],
        "step_native": [],
        "get_matter_count": [],
        "get_step_count": [],
        "clear": [],
        "activate_neighborhood": ["coord", "radius"],
        "get_active_coords": [],
        "get_last_error": [],
        "compute_visualization": ["viz_type"],
        "query_radius": ["center", "radius"],
    }.items():
        assert parameters(getattr(engine, method))[1:] == names, method
    dense = atheria_core.DenseEngine
    for method in ("step", "get_state", "set_state", "load_model", "apply_tool", "get_step_count"):
        assert callable(getattr(dense, method)), method
    assert parameters(dense.generate_bulk_state)[1:] == ["base_field", "depth"]
    smap = atheria_core.SparseMap
    assert parameters(smap.get)[1:] == ["key", "default_value"]
    for method in ("insert", "contains", "remove", "clear", "size", "empty", "keys", "values", "insert_tensor",
                   "contains_coord", "get_tensor", "remove_coord", "coord_keys"):
        assert callable(getattr(smap, method)), method


def test_hello_world_and_coordinates_as_the_labs_binding_test_uses_them():
    assert atheria_core.add(5, 3) == 8 and atheria_core.add(-5, 15) == 10
    assert atheria_core.has_torch_support() is True
    coord = atheria_core.Coord3D(10, 20, 30)
    assert (coord.x, coord.y, coord.z) == (10, 20, 30)
    coord.x, coord.y, coord.z = 100, 200, 300
    assert repr(coord) == "Coord3D(100, 200, 300)"
    assert repr(atheria_core.Coord3D()) == "Coord3D(0, 0, 0)"


def test_sparse_map_numbers():
    smap = atheria_core.SparseMap()
    assert smap.empty() and smap.size() == 0 and len(smap) == 0
    smap.insert(1, 10.5)
    smap.insert(2, 20.7)
    smap[3] = 30.9
    assert smap.size() == 3 and smap.contains(2) and 1 in smap and 4 not in smap
    assert smap.get(1) == 10.5 and smap[3] == 30.9
    assert smap.get(9) == 0.0 and smap.get(9, default_value=-1.0) == -1.0
    assert sorted(smap.keys()) == [1, 2, 3] and sorted(smap.values()) == [10.5, 20.7, 30.9]
    with pytest.raises(KeyError):
        smap[9]
    smap.remove(2)
    del smap[3]
    smap.remove(42)  # absent: nothing happens, as in the lab
    assert smap.size() == 1 and not smap.contains(2) and repr(smap) == "<SparseMap with 1 elements>"
    with pytest.raises(TypeError):
        smap.insert(1.5, 2.0)
    smap.clear()
    assert smap.empty()


def test_sparse_map_tensors_as_the_labs_tensor_test_stores_them():
    smap = atheria_core.SparseMap()
    rng = np.random.default_rng(0)
    stored = {}
    for i in range(5):
        coord = atheria_core.Coord3D(i * 10, i * 20, i * 30)
        tensor = rng.standard_normal(4).astype(np.float32)
        smap.insert_tensor(coord, tensor)
        stored[(coord.x, coord.y, coord.z)] = tensor
    smap.insert(7, 1.0)
    assert smap.size() == 6 and len(smap.coord_keys()) == 5 and smap.keys() == [7]
    for key, tensor in stored.items():
        coord = atheria_core.Coord3D(*key)
        assert smap.contains_coord(coord)
        np.testing.assert_array_equal(smap.get_tensor(coord), tensor)
    # The key is the coordinate's value: moving the Coord3D afterwards moves nothing.
    coord = atheria_core.Coord3D(100, 200, 300)
    smap.insert_tensor(coord, stored[(0, 0, 0)] * 2.0)
    coord.x = 5
    assert smap.contains_coord(atheria_core.Coord3D(100, 200, 300))
    assert smap.get_tensor(coord) is None
    smap.remove_coord(atheria_core.Coord3D(100, 200, 300))
    assert not smap.contains_coord(atheria_core.Coord3D(100, 200, 300))
    assert sorted((c.x, c.y, c.z) for c in smap.coord_keys()) == sorted(stored)
    smap.clear()
    assert smap.size() == 0 and smap.coord_keys() == []


def test_matter_is_counted_as_the_lab_counts_its_stored_particles(fixtures):
    grid_size, d_state = 64, 2
    engine = atheria_core.Engine(d_state, "cpu", grid_size)
    assert engine.get_matter_count() == 0
    rng = np.random.default_rng(1)
    places = []
    for i in range(10):
        x, y = (i * 7) % grid_size, (i * 13) % grid_size
        state = (rng.standard_normal(d_state) + 1j * rng.standard_normal(d_state)).astype(np.complex64) * 0.5
        engine.add_particle(atheria_core.Coord3D(x, y, 0), state)
        places.append((x, y))
    assert engine.get_matter_count() == 10
    neighbourhoods = {(x + dx, y + dy) for x, y in places for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert {(c.x, c.y) for c in engine.get_active_coords()} == neighbourhoods
    # Without a law time passes and the particles stay, as in the lab.
    assert engine.step_native() == 10 and engine.get_step_count() == 1
    # With one, the lab keeps every visited (active) cell whose updated state is not ~0; every
    # renormalised cell qualifies, so the particles become the active region.
    law = os.path.join(fixtures, "pytorch", "mlp.pth")  # d_state 3
    engine3 = atheria_core.Engine(d_state=3, device="cpu", grid_size=16)
    assert engine3.load_model(law), engine3.get_last_error()
    engine3.add_particle(atheria_core.Coord3D(8, 8, 0), np.array([1, 0, 0], dtype=np.complex64))
    engine3.add_particle(atheria_core.Coord3D(9, 8, 0), np.array([0, 1, 0], dtype=np.complex64))
    # atheria's own measure, under its own name: basis states are far from the vacuum's spread.
    assert engine3.get_matter_cells() == 2
    active = {(c.x, c.y) for c in engine3.get_active_coords()}
    assert len(active) == 12
    assert engine3.step_native() == 12 == engine3.get_matter_count()
    assert len(engine3.get_active_coords()) == 6 * 5
    assert [repr(c) for c in engine3.query_radius(atheria_core.Coord3D(8, 8, 0), 1)] == ["Coord3D(8, 8, 0)", "Coord3D(9, 8, 0)"]
    engine3.clear()
    assert engine3.get_matter_count() == 0 and engine3.get_active_coords() == [] and engine3.query_radius(atheria_core.Coord3D(8, 8, 0), 9) == []


def test_the_bulk_state_is_the_labs_blur_stack():
    reference = np.load(os.path.join(LAB, "bulk_reference.npz"))
    field, want, depth = reference["field"], reference["bulk"], int(reference["depth"])
    engine = atheria_core.DenseEngine(grid_size=9, d_state=1, device="cpu")
    got = as_numpy(engine.generate_bulk_state(field, depth))
    assert got.shape == want.shape == (1, 2 * depth, 9, 11) and got.dtype == np.float32
    # Each blur averages 9 float32 values with exact binary weights: a few ulps per level.
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    # One plane [H, W] and a complex field (real kernel: real and imaginary parts alike).
    plane = as_numpy(engine.generate_bulk_state(field[0], depth))
    assert plane.shape == (1, depth, 9, 11)
    np.testing.assert_allclose(plane[0], got[0, 0::2], rtol=0, atol=1e-6)
    complex_bulk = as_numpy(engine.generate_bulk_state(field[0] + 1j * field[1], depth))
    assert complex_bulk.dtype == np.complex64
    np.testing.assert_allclose(complex_bulk[0].imag, got[0, 1::2], rtol=0, atol=1e-6)
    with pytest.raises(atheria.UsageError, match="depth"):
        engine.generate_bulk_state(field, 0)
    with pytest.raises(atheria.StateError, match="base field"):
        engine.generate_bulk_state(np.zeros(5, dtype=np.float32), 2)


def test_device_str_is_accepted_beside_device():
    assert atheria_core.Engine(d_state=2, device_str="cpu").get_step_count() == 0
    assert atheria_core.DenseEngine(8, 2, device_str="cpu").get_step_count() == 0
    with pytest.raises(TypeError, match="device or device_str"):
        atheria_core.Engine(d_state=2, device="wgpu", device_str="cpu")


def run_python(code, cwd, lib):
    """Runs `code` in a fresh interpreter with the broken CUDA install `lib` on the library path."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib), PYTHONPATH=str(cwd))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def broken_cuda(tmp_path):
    """The lab's fix note's install: libcuda needs a libnvJitLink symbol that the one found lacks."""
    root = tmp_path / "cuda"
    root.mkdir()
    return cuda_install(root, ["NEEDS_JITLINK"], True)


# The fix note's first verification, verbatim.
FIX_NOTE_IMPORT = """
# Probar importación directa en CPU mode
import os
os.environ['CUDA_VISIBLE_DEVICES'] = ''
import atheria_core

# Crear Engine en CPU mode
engine = atheria_core.Engine(d_state=8, device_str='cpu')
"""

# The fix note's second verification, verbatim.
FIX_NOTE_WRAPPER = """
from src.engines.native_engine_wrapper import NativeEngineWrapper

# Intentar inicializar con CPU (debería funcionar)
wrapper = NativeEngineWrapper(
    grid_size=128,
    d_state=8,
    device='cpu'  # Forzar CPU mode
)
"""

# A stand-in for the lab's wrapper module (our own code): it reaches atheria_core as the lab's
# does, by the calls its wrapper makes when it starts and draws.
WRAPPER = '''
import atheria_core


class NativeEngineWrapper:
    def __init__(self, grid_size, d_state, device="cpu"):
        atheria_core.set_num_threads(atheria_core.get_max_threads())
        self.native_version = atheria_core.get_version()
        self.native_engine = atheria_core.Engine(d_state=d_state, device=device, grid_size=grid_size)
        for i in range(20):
            state = [complex(1.0 if c == i % d_state else 0.0) for c in range(d_state)]
            self.native_engine.add_particle(atheria_core.Coord3D(i, 2 * i, 0), state)
        self.particles = self.native_engine.step_native()
        density = self.native_engine.compute_visualization("density")
        bulk = atheria_core.DenseEngine(grid_size, 1, device).generate_bulk_state(density, 5)
        print("wrapper", self.native_version, self.particles, tuple(bulk.shape))
'''


def test_the_fix_notes_verifications_run_verbatim_with_a_broken_cuda(tmp_path, broken_cuda):
    done = run_python(FIX_NOTE_IMPORT + "print('engine', engine.get_step_count())", tmp_path, broken_cuda)
    assert done.returncode == 0, done.stderr
    assert "engine 0" in done.stdout
    package = tmp_path / "src" / "engines"
    package.mkdir(parents=True)
    for folder in (tmp_path / "src", package):
        (folder / "__init__.py").write_text("")
    (package / "native_engine_wrapper.py").write_text(WRAPPER)
    done = run_python(FIX_NOTE_WRAPPER, tmp_path, broken_cuda)
    assert done.returncode == 0, done.stderr
    assert f"wrapper {atheria.__version__} 20 (1, 5, 128, 128)" in done.stdout, done.stdout


def test_cuda_falls_back_to_the_cpu_with_a_warning(tmp_path, broken_cuda):
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        import atheria_core
        engine = atheria_core.Engine(d_state=2, device="cuda")
        print("steps", engine.step_native())
        """
    )
    done = run_python(code, tmp_path, broken_cuda)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" in done.stderr and "running on" in done.stderr, done.stderr
    assert "running on cuda" not in done.stderr
    assert "__nvJitLinkCreate" in done.stderr, done.stderr
    assert "steps 0" in done.stdout
