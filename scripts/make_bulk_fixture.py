"""Writes tests/fixtures/lab/bulk_reference.npz (run by hand):

    pip install numpy scipy
    python scripts/make_bulk_fixture.py

The reference for `atheria_core.DenseEngine.generate_bulk_state`, the lab's "holographic bulk"
(src/cpp_core/src/dense_engine.cpp): the field, then depth - 1 successive 3x3 binomial blurs
([[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16, zero padding), stacked on the channel axis. Here each
blur is SciPy's 2-D convolution in float64, an implementation independent of the package's.

Arrays: field (float32 [2, 9, 11]), bulk (float64 [1, 2 * DEPTH, 9, 11]), depth (int).
"""

import os

import numpy as np
from scipy.signal import convolve2d

DEPTH = 5
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "lab", "bulk_reference.npz")


def main():
    rng = np.random.default_rng(7)
    field = rng.standard_normal((2, 9, 11)).astype(np.float32)
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16.0
    layers = [field.astype(np.float64)]
    for _ in range(1, DEPTH):
        layers.append(np.stack([convolve2d(plane, kernel, mode="same", boundary="fill") for plane in layers[-1]]))
    bulk = np.concatenate(layers, axis=0)[None]
    np.savez(OUT, field=field, bulk=bulk, depth=np.int64(DEPTH))
    print(f"wrote {OUT}: bulk {bulk.shape}")


if __name__ == "__main__":
    main()
