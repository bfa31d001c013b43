"""A drop-in for the lab's native engine module: ``import atheria.native as atheria_core``.

The names, signatures and return conventions of the lab's ``atheria_core`` (pybind11 over
LibTorch) that its ``native_engine_wrapper.py`` uses, over atheria's engines. Tensors come out
as torch tensors when torch can be imported, else NumPy arrays, in the lab's layouts; either
goes in. What differs from the C++ module is listed in docs/python.md.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

import atheria
from atheria import _native
from atheria._coord3d import Coord3D
from atheria._sparse_map import SparseMap

__all__ = [
    "Coord3D",
    "DenseEngine",
    "Engine",
    "SparseMap",
    "add",
    "get_max_threads",
    "get_version",
    "has_torch_support",
    "set_num_threads",
]

__version__ = atheria.__version__
VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH = (int(part) for part in __version__.split(".")[:3])

try:  # Tensors go out as torch tensors when the lab's torch is there.
    import torch as _torch
except Exception:  # noqa: BLE001 - a broken torch install must not break this module
    _torch = None


def get_version() -> str:
    """The engine's version."""
    return atheria.__version__


def add(i: int, j: int) -> int:
    """The lab module's first binding, kept for its "hello world" checks: ``i + j``."""
    return int(i) + int(j)


def has_torch_support() -> bool:
    """True: the engine runs models (it needs no LibTorch; torch tensors are accepted and
    returned when torch is importable)."""
    return True


def set_num_threads(num_threads: int) -> None:
    """Sets the CPU backend's threads. The pool starts once per process; afterwards the call
    warns and the count stays."""
    if not _native.set_cpu_threads(int(num_threads)):
        warnings.warn(
            f"set_num_threads({num_threads}): the CPU thread pool has already started with "
            f"{_native.cpu_threads()} threads; set it before the first engine",
            RuntimeWarning,
            stacklevel=2,
        )


def get_max_threads() -> int:
    """The CPU backend's threads."""
    return _native.cpu_threads()


def _out(array: np.ndarray) -> Any:
    """An array in the caller's world: a torch tensor when torch is importable."""
    if _torch is not None:
        return _torch.from_numpy(np.ascontiguousarray(array))
    return array


def _plane(coord: Coord3D) -> Tuple[int, int]:
    if coord.z != 0:
        raise atheria.UsageError(
            f"{coord!r}: atheria's engine is two-dimensional, so z must be 0 (the lab's 3-D coordinates are not supported)"
        )
    return coord.x, coord.y


def _load(model_path: str) -> atheria.Model:
    """A model directory, or a checkpoint (TorchScript `.pt` as the lab exports it, `.pth`,
    `.safetensors`)."""
    if os.path.isdir(model_path):
        return atheria.Model.load(model_path)
    return atheria.Model.import_checkpoint(model_path)


def _device(device: str, device_str: Optional[str]) -> str:
    """The device asked for. The lab's bindings name the argument ``device``; its own notes call
    it ``device_str``, so both are taken (not both at once). Unknown names mean ``auto``, as
    the lab's "anything but cuda is the CPU" did not refuse them either."""
    if device_str is not None:
        if device not in (None, "cpu"):
            raise TypeError("give the device once: device or device_str, not both")
        device = device_str
    device = str(device)
    return device if device in ("cpu", "cuda", "wgpu", "auto") or device.startswith("cuda:") else "auto"


def _gaussian_blur(field: np.ndarray) -> np.ndarray:
    """The lab's 3x3 binomial blur ([[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16) of every plane of
    [..., H, W], with zero padding (``conv2d`` with ``padding=1``)."""
    padded = np.pad(field, [(0, 0)] * (field.ndim - 2) + [(1, 1), (1, 1)])
    height, width = field.shape[-2:]
    weights = np.array([0.25, 0.5, 0.25], dtype=field.real.dtype)
    rows = sum(w * padded[..., i : i + height, :] for i, w in enumerate(weights))
    return sum(w * rows[..., :, j : j + width] for j, w in enumerate(weights))


class DenseEngine:
    """The lab's dense engine: a complex64 state [1, d, H, W] (zeros at first), stepped as
    ``psi + M(psi)`` renormalised per cell, without decay. Without a loaded model ``step``
    does nothing and returns 0."""

    def __init__(self, grid_size: int, d_state: int, device: str = "cpu", *, device_str: Optional[str] = None) -> None:
        self._device = _device(device, device_str)
        self._d_state = int(d_state)
        self._state = np.zeros((1, self._d_state, int(grid_size), int(grid_size)), dtype=np.complex64)
        self._model: Optional[atheria.Model] = None
        self._simulation: Optional[atheria.Simulation] = None

    def load_model(self, model_path: str) -> bool:
        """Loads a law; False (with the reason on stderr, as the lab did) when it cannot."""
        try:
            model = _load(str(model_path))
            if model.d_state != self._d_state:
                raise atheria.ModelError(f"the model has d_state {model.d_state}, the engine {self._d_state}")
            self._model = model
            self._start()
            return True
        except atheria.AtheriaError as error:
            print(f"Error loading model: {error}", file=sys.stderr)
            return False

    def _start(self) -> None:
        state = self.get_state_numpy()
        _, _, height, width = state.shape
        self._simulation = atheria.Simulation(
            self._model, grid=(height, width), batch=1, device=self._device, gamma=0.0
        )
        self._simulation.set_psi(np.transpose(state, (0, 2, 3, 1)))

    def step(self) -> int:
        """One step; returns the cells stepped (0 without a model)."""
        if self._simulation is None:
            return 0
        self._simulation.step(1)
        _, height, width, _ = self._simulation.shape
        return height * width

    def get_state_numpy(self) -> np.ndarray:
        """The state as a NumPy complex64 [1, d, H, W] array (a copy)."""
        if self._simulation is None:
            return self._state.copy()
        return np.ascontiguousarray(np.transpose(self._simulation.psi, (0, 3, 1, 2)))

    def get_state(self) -> Any:
        """The state, complex64 [1, d, H, W]."""
        return _out(self.get_state_numpy())

    def set_state(self, new_state: Any) -> None:
        """Replaces the state ([1, d, H, W] or [d, H, W]; another grid size is taken as is)."""
        if hasattr(new_state, "detach") and hasattr(new_state, "cpu"):  # a torch tensor
            new_state = new_state.detach().cpu().numpy()
        array = np.asarray(new_state)
        if array.ndim == 3:
            array = array[None]
        array = atheria._complex_array(array, "the state", 4)
        if array.shape[0] != 1 or array.shape[1] != self._d_state:
            raise atheria.StateError(f"the state must be [1, {self._d_state}, H, W] or [{self._d_state}, H, W], got {list(array.shape)}")
        if self._simulation is not None and self._simulation.shape[1:3] == array.shape[2:4]:
            self._simulation.set_psi(np.transpose(array, (0, 2, 3, 1)))
            return
        # Kept here until a model is loaded, so checked here (the engine checks what it gets).
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise atheria.StateError(f"the state holds {bad} non-finite value(s) (NaN or infinity)")
        self._state = array.copy()
        if self._model is not None:
            self._simulation = None
            self._start()

    def apply_tool(self, action: str, params: Dict[str, float]) -> bool:
        """Applies atheria's tool `action` (``vortex``, ``collapse``, ``wave``, ``click-out``,
        ...) with `params` as its keys; False when there is no state on a device yet or the
        tool or its parameters are unknown (the lab's module always returned False)."""
        if self._simulation is None:
            return False
        spec = action + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
        try:
            self._simulation.apply(spec)
            return True
        except atheria.AtheriaError:
            return False

    def get_step_count(self) -> int:
        return 0 if self._simulation is None else self._simulation.step_count

    def generate_bulk_state(self, base_field: Any, depth: int) -> Any:
        """The lab's "holographic bulk": `base_field` ([H, W], [C, H, W] or [1, C, H, W], real
        or complex) and `depth` - 1 successive 3x3 binomial blurs of it (zero padding), stacked
        on the channel axis as [1, depth * C, H, W], the sharpest first."""
        if hasattr(base_field, "detach") and hasattr(base_field, "cpu"):  # a torch tensor
            base_field = base_field.detach().cpu().numpy()
        field = np.asarray(base_field)
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise atheria.UsageError(f"the depth must be an integer of at least 1, got {depth!r}")
        if field.ndim not in (2, 3, 4) or (field.ndim == 4 and field.shape[0] != 1):
            raise atheria.StateError(f"the base field must be [H, W], [C, H, W] or [1, C, H, W], got shape {field.shape}")
        dtype = np.complex64 if np.iscomplexobj(field) else np.float32
        current = field.reshape((1,) * (4 - field.ndim) + field.shape).astype(dtype)
        layers = [current]
        for _ in range(1, int(depth)):
            current = _gaussian_blur(current).astype(dtype)
            layers.append(current)
        return _out(np.concatenate(layers, axis=1))


class Engine:
    """The lab's sparse engine over atheria's sparse universe (tiles over a vacuum, see
    docs/sparse.md), in the plane z = 0. ``grid_size`` is the side of the window that
    ``compute_visualization`` draws."""

    def __init__(self, d_state: int, device: str = "cpu", grid_size: int = 64, *, device_str: Optional[str] = None) -> None:
        self._d_state = int(d_state)
        self._grid_size = int(grid_size)
        self._device = _device(device, device_str)
        self._sparse = _native.Sparse(self._d_state, device=self._device)
        atheria._warn_on_fallback(self._sparse)
        # The lab's bookkeeping: its stored particles, the cells its step visits, and the
        # places add_particle indexed for query_radius.
        self._particles: Set[Tuple[int, int]] = set()
        self._active: Set[Tuple[int, int]] = set()
        self._placed: Set[Tuple[int, int]] = set()
        self._idle_steps = 0
        self._last_error = ""

    def load_model(self, model_path: str) -> bool:
        """Loads a law; False with the reason in ``get_last_error()`` when it cannot."""
        try:
            self._sparse.load_model(_load(str(model_path)))
            self._last_error = ""
            return True
        except atheria.AtheriaError as error:
            self._last_error = str(error)
            return False

    def add_particle(self, coord: Coord3D, state: Any) -> None:
        """Writes a cell's complex state [d] at `coord` and activates its neighbourhood."""
        x, y = _plane(coord)
        cell = atheria._complex_array(state, "the particle's state", 1)
        if cell.shape[0] != self._d_state:
            raise atheria.StateError(f"the particle's state has {cell.shape[0]} channels, the engine {self._d_state}")
        self._sparse.paste_dense(cell.tobytes(), [1, 1, 1, self._d_state], x, y)
        self._particles.add((x, y))
        self._placed.add((x, y))
        self.activate_neighborhood(coord)

    def get_state_at(self, coord: Coord3D) -> Any:
        """The complex state [d] of a cell (the vacuum's where no matter is stored)."""
        x, y = _plane(coord)
        data = self._sparse.to_dense(x, y, 1, 1)
        return _out(np.frombuffer(data, dtype=np.complex64).copy())

    def step_native(self) -> int:
        """One step of the loaded law (without one, the step count advances and nothing
        moves, as in the lab). Returns the matter count, as ``get_matter_count``."""
        if self._sparse.has_model:
            try:
                self._sparse.step()
            except atheria.AtheriaError as error:
                self._last_error = str(error)
                raise
            # The lab's step visits the active cells and keeps as a particle each whose updated
            # state has a norm above 0.01; atheria renormalises every cell to norm 1, so each
            # visited cell is kept.
            self._particles = set(self._active)
        else:
            self._idle_steps += 1
        self._active = set()
        for x, y in self._particles:
            self._activate(x, y, 1)
        return self.get_matter_count()

    def get_matter_count(self) -> int:
        """Stored particles, as the lab counts them: the cells placed with ``add_particle``,
        and after each step with a law every cell that step visited (see ``step_native``)."""
        return len(self._particles)

    def get_matter_cells(self) -> int:
        """atheria's own measure of matter: the cells whose channel densities differ from the
        vacuum's (docs/sparse.md), in the whole unbounded universe."""
        return self._sparse.matter_cells

    def get_step_count(self) -> int:
        return self._sparse.step_count + self._idle_steps

    def clear(self) -> None:
        """Forgets all matter, the active region and the step count."""
        self._sparse.clear()
        self._particles.clear()
        self._active.clear()
        self._placed.clear()
        self._idle_steps = 0

    def activate_neighborhood(self, coord: Coord3D, radius: int = 1) -> None:
        """Marks the cells within `radius` (a square) of `coord` as active."""
        x, y = _plane(coord)
        self._activate(x, y, int(radius))

    def _activate(self, x: int, y: int, radius: int) -> None:
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                self._active.add((x + dx, y + dy))

    def get_active_coords(self) -> List[Coord3D]:
        """The active cells: the neighbourhoods of the particles, as the lab's step visits them
        (atheria evolves every tile within reach of matter on its own; this set is kept for
        the lab's callers)."""
        return [Coord3D(x, y, 0) for x, y in sorted(self._active)]

    def get_last_error(self) -> str:
        return self._last_error

    def compute_visualization(self, viz_type: str) -> Any:
        """A [grid_size, grid_size] float32 map of the window at the origin: ``density`` and
        ``energy`` (sum of |psi|^2 per cell) or ``phase`` (the angle of channel 0)."""
        n = self._grid_size
        psi = np.frombuffer(self._sparse.to_dense(0, 0, n, n), dtype=np.complex64).reshape(n, n, self._d_state)
        if viz_type in ("density", "energy"):
            out = np.sum(np.abs(psi) ** 2, axis=-1)
        elif viz_type == "phase":
            out = np.angle(psi[..., 0])
        else:
            raise atheria.UsageError(f"unknown visualization '{viz_type}': expected density, energy or phase")
        return _out(out.astype(np.float32))

    def query_radius(self, center: Coord3D, radius: int) -> List[Coord3D]:
        """The places given to ``add_particle`` within the box of half-side `radius` around
        `center` (the lab's spatial index holds those, not what later steps made)."""
        cx, cy = _plane(center)
        return [
            Coord3D(x, y, 0)
            for x, y in sorted(self._placed)
            if abs(x - cx) <= radius and abs(y - cy) <= radius
        ]
