"""Writes tests/fixtures/observables.safetensors (run by hand):

    pip install numpy safetensors
    python scripts/make_tool_fixtures.py

An independent NumPy implementation of the observables and of the deterministic tools (vortex,
wave), evaluated in float64 on a small seeded state stored as float32. Tensors, in the engine's
layout (real parts in channels 0..d, imaginary parts in d..2d):

  psi      [B, 2d, H, W]  cells of varying norm, one zero cell, one zero channel, one basis state
  input    [B, 2d, H, W]  the state an update was computed from (a few channels below 1e-10)
  delta    [B, 2d, H, W]  that update
  density, phase, energy, gradient, real, imag, entropy, coherence, activity, spectral,
  physics, matter  [B, H, W]  the maps
  total_energy, mean_entropy, cells_above  [B]  the scalar metrics (threshold in the metadata)
  unit     [B, 2d, H, W]  psi normalised per cell (zero cell kept at zero)
  vortex, wave  [B, 2d, H, W]  the tools applied to `unit` (specs in the metadata)
"""
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "observables.safetensors")
B, H, W, D = 2, 6, 7, 3
THRESHOLD = 0.5
VORTEX = dict(x=3.0, y=2.0, radius=2.5, m=2, strength=0.8)
WAVE = dict(kx=0.7, ky=-0.4, amplitude=0.6)


def to_layout(z):
    """complex [B, d, H, W] -> float32 [B, 2d, H, W]."""
    return np.concatenate([z.real, z.imag], axis=1).astype(np.float32)


def from_layout(x):
    x = x.astype(np.float64)
    return x[:, :D] + 1j * x[:, D:]


def make_state(rng):
    z = rng.normal(size=(B, D, H, W)) + 1j * rng.normal(size=(B, D, H, W))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z *= rng.uniform(0.2, 1.3, size=(B, 1, H, W))
    z[1, :, 2, 3] = 0.0  # a zero cell
    z[0, 1, 4, 5] = 0.0  # one zero channel
    z[0, :, 1, 1] = [0.0, 0.8j, 0.0]  # a basis state
    return z


def entropy(z):
    w = np.abs(z) ** 2
    total = w.sum(axis=1, keepdims=True)
    p = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1) / np.log(D)


def activity(z):
    w = np.abs(z) ** 2
    total = w.sum(axis=1, keepdims=True)
    p = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    s = (p ** 2).sum(axis=1)
    return np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)


def phase(z):
    # np.angle(0) == 0, so a zero channel counts as phase 0.
    theta = np.angle(z)
    return np.arctan2(np.sin(theta).mean(axis=1), np.cos(theta).mean(axis=1))


def coherence(z):
    right = np.roll(z, -1, axis=3)
    inner = np.abs((np.conj(z) * right).sum(axis=1))
    norms = np.linalg.norm(z, axis=1) * np.linalg.norm(right, axis=1)
    return np.divide(inner, norms, out=np.zeros_like(inner), where=norms > 0)


def gradient(rho):
    gy, gx = np.gradient(rho, axis=(1, 2))
    return np.hypot(gy, gx)


def spectral(rho):
    out = np.empty_like(rho)
    for b in range(B):
        s = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(rho[b]))))
        cy, cx = H // 2, W // 2
        neighbours = [s[(cy + dy) % H, (cx + dx) % W] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
        s[cy, cx] = max(neighbours)
        out[b] = s
    return out


def physics(z_in, dz):
    mag = np.abs(z_in)
    ratio = np.where(mag > 1e-10, np.abs(dz) / (mag + 1e-10), 0.0)
    return ratio.mean(axis=1)


def blend_phase(weight, angle):
    z = (1 - weight) + weight * np.exp(1j * angle)
    return np.where(np.abs(z) < 1e-12, 0.0, np.angle(z))


def vortex(z, x, y, radius, m, strength):
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = cols - x, rows - y
    d2 = dx ** 2 + dy ** 2
    sigma = radius / 2
    weight = np.where(d2 <= radius ** 2, strength * np.exp(-d2 / (2 * sigma ** 2)), 0.0)
    return z * np.exp(1j * blend_phase(weight, m * np.arctan2(dy, dx)))[None, None]


def wave(z, kx, ky, amplitude):
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    return z * np.exp(1j * blend_phase(amplitude, kx * cols + ky * rows))[None, None]


def main():
    rng = np.random.default_rng(20240611)
    psi = to_layout(make_state(rng))
    z_in = make_state(rng)
    z_in[1, 2, 0, 6] = 1e-12  # below the physics map's floor
    z_in[0, 0, 5, 0] = 0.0
    inp = to_layout(z_in)
    delta = to_layout(0.1 * (rng.normal(size=(B, D, H, W)) + 1j * rng.normal(size=(B, D, H, W))))

    z, z_in, dz = from_layout(psi), from_layout(inp), from_layout(delta)
    rho = (np.abs(z) ** 2).sum(axis=1)
    energy = (np.abs(dz) ** 2).sum(axis=1)
    ent = entropy(z)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    unit_z = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    unit = to_layout(unit_z)
    unit_z = from_layout(unit)

    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    tensors = {
        "psi": psi,
        "input": inp,
        "delta": delta,
        "density": f32(rho),
        "phase": f32(phase(z)),
        "energy": f32(energy),
        "gradient": f32(gradient(rho)),
        "real": f32(z.real.mean(axis=1)),
        "imag": f32(z.imag.mean(axis=1)),
        "entropy": f32(ent),
        "coherence": f32(coherence(z)),
        "activity": f32(activity(z)),
        "spectral": f32(spectral(rho)),
        "physics": f32(physics(z_in, dz)),
        # L1 distance of the channel densities from the vacuum's 1/d (the sparse engine's matter).
        "matter": f32(np.abs(np.abs(z) ** 2 - 1.0 / D).sum(axis=1)),
        "total_energy": f32(energy.sum(axis=(1, 2))),
        "mean_entropy": f32(ent.mean(axis=(1, 2))),
        "cells_above": f32((rho > THRESHOLD).sum(axis=(1, 2))),
        "unit": unit,
        "vortex": to_layout(vortex(unit_z, **VORTEX)),
        "wave": to_layout(wave(unit_z, **WAVE)),
    }
    spec = lambda name, params: name + ":" + ",".join(f"{k}={v}" for k, v in params.items())  # noqa: E731
    metadata = {
        "threshold": str(THRESHOLD),
        "vortex": spec("vortex", VORTEX),
        "wave": spec("wave", WAVE),
    }
    save_file(tensors, OUT, metadata=metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
