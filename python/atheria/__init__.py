"""atheria: a tensor engine for learned quantum cellular automata, from Python.

A complex state ``psi`` [B, H, W, d] evolves under a learned law M on the CPU, wgpu or CUDA,
chosen at run time by a guarded constructor that falls back instead of crashing::

    import atheria

    model = atheria.Model.default()
    sim = atheria.Simulation(model, grid=64, seed=1)
    sim.step(10)
    density = sim.view("density")      # numpy float32 [B, H, W]
    psi = sim.psi                      # numpy complex64 [B, H, W, d], a copy

Errors are exceptions of one class per family, all subclasses of :class:`AtheriaError`, with
the messages of the ``atheria`` command line. ``atheria.native`` is a drop-in for the lab's
``atheria_core`` module. See docs/python.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np


def _quiet_headless_vulkan() -> None:
    """On a headless machine Vulkan's window-system layer prints "XDG_RUNTIME_DIR is invalid"
    at every device probe; a private directory silences it (as the command line does)."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = os.path.join(tempfile.gettempdir(), f"atheria-runtime-{os.environ.get('USER', 'user')}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = path


_quiet_headless_vulkan()

from atheria import _native  # noqa: E402 - after the environment is set
from atheria._native import (  # noqa: E402
    AtheriaError,
    DeviceError,
    FileError,
    Model,
    ModelError,
    OutOfMemoryError,
    StateError,
    TrainingError,
    UsageError,
)

__all__ = [
    "AtheriaError",
    "DeviceError",
    "FileError",
    "Model",
    "ModelError",
    "OutOfMemoryError",
    "SparseUniverse",
    "Simulation",
    "StateError",
    "TrainingError",
    "UsageError",
    "devices",
    "__version__",
]

__version__ = _native.version()

# GPU probes run in a child interpreter (`python -m atheria._probe`), so that a broken driver
# that crashes or aborts ends the child, not this process.
_native.enable_isolated_probes(sys.executable, ["-m", "atheria._probe"])

Grid = Union[int, Tuple[int, int]]


def devices() -> List[dict]:
    """The probe of every compiled backend, as ``atheria devices --json`` reports it: one dict
    per attempt (``backend``, ``device``, ``failure`` with its ``cause`` and ``summary``, or
    None when the backend started and computed correctly, and the driver pre-check)."""
    return json.loads(_native.devices_json())["attempts"]


def _count(value: Any, what: str, minimum: int = 1) -> int:
    """`value` as an int of at least `minimum`, or a UsageError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{what} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def _grid(grid: Optional[Grid]) -> Optional[Tuple[int, int]]:
    if grid is None:
        return None
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        side = _count(grid, "the grid side")
        return (side, side)
    try:
        height, width = grid
    except (TypeError, ValueError):
        raise UsageError(f"the grid is a side or (height, width), got {grid!r}") from None
    return (_count(height, "the grid height"), _count(width, "the grid width"))


def _warn_on_fallback(engine: Any, stacklevel: int = 3) -> None:
    """Warns when `engine` (a `_native.Dense` or `_native.Sparse`) runs on another device than
    the one explicitly asked for, with the report's cause."""
    if engine.fell_back:
        import warnings

        warnings.warn(
            f"the device asked for cannot start, so the engine runs elsewhere: {engine.device_report}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _complex_array(array: Any, what: str, ndim: int) -> np.ndarray:
    """`array` as a C-contiguous complex64 NumPy array of `ndim` dimensions, refusing what
    cannot be one without loss (real arrays are accepted: imaginary parts zero)."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # a torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != ndim:
        raise StateError(f"{what} must have {ndim} dimensions, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.complexfloating) or np.issubdtype(array.dtype, np.floating)):
        raise StateError(f"{what} must be a complex or real floating-point array, got dtype {array.dtype}")
    # Finite values are checked by the engine, after the conversion (which can overflow).
    return np.ascontiguousarray(array, dtype=np.complex64)


class Simulation:
    """A dense batch of universes under a law.

    ``grid`` is a side or ``(height, width)`` (None: the model's default grid, else 64x64);
    ``init`` is an initial state as ``atheria run --init`` reads it (None: the model's
    default); ``device`` is ``auto``, ``cpu``, ``wgpu``, ``cuda`` or ``cuda:N``, and falls back
    unless ``strict``; ``gamma`` None means the model's decay rate.
    """

    def __init__(
        self,
        model: Model,
        grid: Optional[Grid] = None,
        batch: int = 1,
        init: Optional[str] = None,
        seed: int = 0,
        device: str = "auto",
        gamma: Optional[float] = None,
        strict: bool = False,
    ) -> None:
        self.model = model
        self._dense = _native.Dense(
            model,
            grid=_grid(grid),
            batch=_count(batch, "the batch"),
            init=init,
            seed=_count(seed, "the seed", 0),
            device=device,
            strict=strict,
            gamma=gamma,
        )
        _warn_on_fallback(self._dense)

    def step(self, n: int = 1) -> int:
        """Takes ``n`` steps (the GIL is released meanwhile). Ctrl-C stops at a step boundary
        and raises KeyboardInterrupt; the state is then that of the last completed step.
        Returns the step count."""
        return self._dense.step(_count(n, "the step count", 0))

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """[B, H, W, d]."""
        return tuple(self._dense.dims)

    @property
    def psi(self) -> np.ndarray:
        """The state, complex64 [B, H, W, d] (a copy)."""
        return np.frombuffer(self._dense.psi(), dtype=np.complex64).reshape(self.shape).copy()

    def set_psi(self, array: Any) -> None:
        """Replaces the state: [B, H, W, d] with this simulation's H, W and d, finite values.
        Cells are used as given (not renormalised)."""
        array = _complex_array(array, "the state", 4)
        self._dense.set_psi(array.tobytes(), list(array.shape))

    def apply(self, tool: str) -> None:
        """Applies a tool, written as ``--tool`` reads it (``vortex:x=32,y=32,radius=8,m=2``,
        ``collapse:radius=6``, ``wave:kx=0.3``, ``click-out:chance=0.1``, ...)."""
        self._dense.apply(tool)

    def view(self, name: str) -> np.ndarray:
        """A view as ``atheria run --view`` draws it, float32 [B, H, W]."""
        batch, height, width, _ = self.shape
        return np.frombuffer(self._dense.view(name), dtype=np.float32).reshape(batch, height, width).copy()

    @property
    def step_count(self) -> int:
        """Steps taken since the initial state."""
        return self._dense.step_count

    @property
    def gamma(self) -> float:
        """The decay rate of every step."""
        return self._dense.gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._dense.gamma = float(value)

    @property
    def device_report(self) -> str:
        """What was asked, what runs, and why (the CLI's ``device:`` lines)."""
        return self._dense.device_report

    def __repr__(self) -> str:
        return f"Simulation(shape={self.shape}, step={self.step_count}, model={self.model!r})"


class SparseUniverse:
    """An unbounded universe of tiles over a deterministic vacuum (see docs/sparse.md): only
    tiles holding matter are stored. Regions are ``(x, y, width, height)`` in cells; dense
    grids are complex64 [H, W, d]."""

    def __init__(
        self,
        model: Model,
        device: str = "auto",
        strict: bool = False,
        tile: Optional[int] = None,
        threshold: Optional[float] = None,
        vacuum_seed: int = 0,
        gamma: Optional[float] = None,
    ) -> None:
        self.model = model
        self._sparse = _native.Sparse(
            model.d_state, device=device, strict=strict, tile=tile, threshold=threshold, vacuum_seed=vacuum_seed
        )
        _warn_on_fallback(self._sparse)
        self._sparse.load_model(model)
        self._sparse.set_gamma(gamma)

    def step(self, n: int = 1) -> int:
        """Takes ``n`` steps (Ctrl-C stops at a step boundary). Returns the step count."""
        for _ in range(_count(n, "the step count", 0)):
            self._sparse.step()
        return self._sparse.step_count

    def to_dense(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The region as complex64 [height, width, d] (the vacuum where nothing is stored)."""
        data = self._sparse.to_dense(int(x), int(y), int(width), int(height))
        return np.frombuffer(data, dtype=np.complex64).reshape(height, width, self.d_state).copy()

    def from_dense(self, array: Any, x: int = 0, y: int = 0) -> None:
        """Writes a complex grid [H, W, d] with its top-left cell at (x, y); tiles it leaves
        without matter are dropped."""
        array = _complex_array(array, "the grid", 3)
        height, width, d_state = array.shape
        self._sparse.paste_dense(array.tobytes(), [1, height, width, d_state], int(x), int(y))

    def clear(self) -> None:
        """Forgets every stored tile and the step count."""
        self._sparse.clear()

    @property
    def stored_tiles(self) -> List[Tuple[int, int]]:
        """(column, row) of every stored tile; tile (i, j) covers cells x in [i*T, (i+1)*T)."""
        return self._sparse.stored_tiles

    @property
    def tile(self) -> int:
        """Cells per tile side (T)."""
        return self._sparse.tile

    @property
    def matter_cells(self) -> int:
        """Cells holding matter."""
        return self._sparse.matter_cells

    @property
    def step_count(self) -> int:
        return self._sparse.step_count

    @property
    def d_state(self) -> int:
        return self._sparse.d_state

    @property
    def device_report(self) -> str:
        return self._sparse.device_report

    def __repr__(self) -> str:
        return f"SparseUniverse(tiles={len(self.stored_tiles)}, step={self.step_count}, model={self.model!r})"
