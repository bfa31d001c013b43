"""Shared helpers: the repository's fixtures (PyTorch references) read, and state files written, with NumPy alone."""

import json
import os
import struct

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")


def read_safetensors(path):
    """{name: float32 array} and the metadata of a safetensors file."""
    with open(path, "rb") as file:
        data = file.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    body = data[8 + length :]
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", f"{name}: {entry['dtype']}"
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(entry["shape"]).copy()
    return tensors, metadata


def write_state(path, psi):
    """A state file as the engine reads it: f32 `re` and `im` [B, H, W, d] in safetensors."""
    re = np.ascontiguousarray(psi.real, dtype="<f4").tobytes()
    im = np.ascontiguousarray(psi.imag, dtype="<f4").tobytes()
    shape = list(psi.shape)
    header = json.dumps(
        {
            "im": {"dtype": "F32", "shape": shape, "data_offsets": [0, len(im)]},
            "re": {"dtype": "F32", "shape": shape, "data_offsets": [len(im), len(im) + len(re)]},
        }
    ).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header)) + header + im + re)


def relative_error(got, want):
    """||got - want|| / ||want||, the measure of the Rust reference tests."""
    got, want = np.asarray(got, dtype=np.complex128), np.asarray(want, dtype=np.complex128)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture
def fixtures():
    return FIXTURES
