"""The lab's ``atheria_core.SparseMap``: numbers under integer keys and tensors under cell
coordinates, in one container. Offered by :mod:`atheria.native` for the lab's code and tests
that store particles in it; atheria's own sparse engine keeps its tiles itself."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from atheria._coord3d import Coord3D


def _key(key: Any) -> int:
    """An integer key, as the lab's int64 keys (bools and floats are refused, as pybind11 did)."""
    if isinstance(key, bool) or not hasattr(key, "__index__"):
        raise TypeError(f"SparseMap keys are integers, got {key!r}")
    return int(key.__index__())


def _coord(coord: Any) -> Tuple[int, int, int]:
    """A coordinate's value: the map keeps (x, y, z), not the mutable Coord3D itself."""
    try:
        return (int(coord.x), int(coord.y), int(coord.z))
    except AttributeError:
        raise TypeError(f"expected a Coord3D, got {coord!r}") from None


class SparseMap:
    """Numbers (float) under integer keys, and tensors under ``Coord3D`` coordinates.

    ``size()``, ``empty()`` and ``clear()`` cover both; ``keys()`` and ``values()`` the numbers.
    A tensor is stored as given (not copied), as the lab's map held a reference to it.
    """

    def __init__(self) -> None:
        self._numbers: Dict[int, float] = {}
        self._tensors: Dict[Tuple[int, int, int], Any] = {}

    # Numbers under integer keys.
    def insert(self, key: int, value: float) -> None:
        """Inserts or replaces the number under `key`."""
        self._numbers[_key(key)] = float(value)

    def contains(self, key: int) -> bool:
        return _key(key) in self._numbers

    def get(self, key: int, default_value: float = 0.0) -> float:
        """The number under `key`, or `default_value`."""
        return self._numbers.get(_key(key), float(default_value))

    def remove(self, key: int) -> None:
        """Removes `key` (nothing happens when it is absent)."""
        self._numbers.pop(_key(key), None)

    def keys(self) -> List[int]:
        return list(self._numbers)

    def values(self) -> List[float]:
        return list(self._numbers.values())

    # Tensors under coordinates.
    def insert_tensor(self, coord: Any, tensor: Any) -> None:
        """Inserts or replaces the tensor at `coord`."""
        self._tensors[_coord(coord)] = tensor

    def contains_coord(self, coord: Any) -> bool:
        return _coord(coord) in self._tensors

    def get_tensor(self, coord: Any) -> Optional[Any]:
        """The tensor at `coord`, or None (the lab's empty tensor) when there is none."""
        return self._tensors.get(_coord(coord))

    def remove_coord(self, coord: Any) -> None:
        self._tensors.pop(_coord(coord), None)

    def coord_keys(self) -> List[Any]:
        """Every coordinate holding a tensor, as new ``Coord3D`` objects."""
        return [Coord3D(*key) for key in self._tensors]

    # Both.
    def clear(self) -> None:
        self._numbers.clear()
        self._tensors.clear()

    def size(self) -> int:
        return len(self._numbers) + len(self._tensors)

    def empty(self) -> bool:
        return self.size() == 0

    def __len__(self) -> int:
        return self.size()

    def __contains__(self, key: int) -> bool:
        return self.contains(key)

    def __setitem__(self, key: int, value: float) -> None:
        self.insert(key, value)

    def __getitem__(self, key: int) -> float:
        key = _key(key)
        if key not in self._numbers:
            raise KeyError("Key not found")
        return self._numbers[key]

    def __delitem__(self, key: int) -> None:
        self.remove(key)

    def __repr__(self) -> str:
        return f"<SparseMap with {self.size()} elements>"
