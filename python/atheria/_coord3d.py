"""The lab's cell coordinate, ``atheria_core.Coord3D``."""

from __future__ import annotations


class Coord3D:
    """A cell coordinate. The engine is two-dimensional: z must be 0 where a coordinate is
    used."""

    __slots__ = ("x", "y", "z")

    def __init__(self, x: int = 0, y: int = 0, z: int = 0) -> None:
        self.x, self.y, self.z = int(x), int(y), int(z)

    def __repr__(self) -> str:
        return f"Coord3D({self.x}, {self.y}, {self.z})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Coord3D) and (self.x, self.y, self.z) == (other.x, other.y, other.z)

    def __hash__(self) -> int:
        return hash((self.x, self.y, self.z))
