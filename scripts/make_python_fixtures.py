"""Writes tests/fixtures/lab/dense_engine_reference.safetensors (run by hand, after
make_fixtures.py and make_lab_fixtures.py, whose files it reads):

    pip install torch safetensors numpy
    python scripts/make_python_fixtures.py

The reference for the Python package's drop-in of the lab's DenseEngine: the C++ engine's
step (src/cpp_core/src/dense_engine.cpp) written again in PyTorch, on the TorchScript export
of the unet fixture (lab/unet_traced.pt), from universe 0 of the unet fixture's psi0:

    state += complex(M(cat(re, im))[:, :d], M(...)[:, d:]);  state /= norm(state, dim=1) + 1e-9

Tensors (float32, the lab's layout [1, d, H, W]): psi0_re/im, psi1_re/im, psi3_re/im.
"""

import os

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def main():
    trajectory = load_file(os.path.join(ROOT, "unet_trajectory.safetensors"))
    # [B, H, W, d] -> universe 0 as [1, d, H, W] complex64
    re = trajectory["psi0_re"][0].permute(2, 0, 1).unsqueeze(0)
    im = trajectory["psi0_im"][0].permute(2, 0, 1).unsqueeze(0)
    state = torch.complex(re, im).to(torch.complex64)
    d = state.shape[1]
    model = torch.jit.load(os.path.join(ROOT, "lab", "unet_traced.pt"))
    model.eval()
    out = {"psi0_re": state.real.clone(), "psi0_im": state.imag.clone()}
    with torch.no_grad():
        for step in range(1, 4):
            x = torch.cat([state.real, state.imag], dim=1)
            y = model(x)
            state = state + torch.complex(y[:, :d], y[:, d:])
            state = state / (torch.norm(state, 2, dim=1, keepdim=True) + 1e-9)
            if step in (1, 3):
                out[f"psi{step}_re"] = state.real.contiguous()
                out[f"psi{step}_im"] = state.imag.contiguous()
    path = os.path.join(ROOT, "lab", "dense_engine_reference.safetensors")
    save_file({k: v.contiguous().float() for k, v in out.items()}, path, metadata={"model": "lab/unet_traced.pt", "grid": "16x20", "d_state": str(d)})
    print("wrote", path)


if __name__ == "__main__":
    main()
