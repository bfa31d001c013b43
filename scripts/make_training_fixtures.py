"""Writes the PyTorch reference for training under tests/fixtures/training/ (run by hand):

    pip install torch safetensors
    python scripts/make_fixtures.py            # the weights these start from
    python scripts/make_training_fixtures.py

For each case: the weights of tests/fixtures/ARCH.safetensors, a seeded psi0, a rollout of
STEPS steps with gradients through time (no noise), the lab's losses on (psi0, psi_final), and
the gradient of the case's loss with respect to every parameter, by the lab's names.

CASE.safetensors  psi0_re/psi0_im [B, H, W, d]; grad.NAME for every parameter (f32)
                  metadata: arch, gamma, steps, loss, and every loss value as text

Computed in float64 from the stored f32 values, so the fixtures measure the engine against
exact maths. The losses are the lab's, written here from its definitions.
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from lab_models import ARCHS, build, qca_step  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "training")
BATCH, SIDE, D_STATE = 2, 16, 3
GAMMA = 0.05
STEPS = 3
# (case name, architecture, loss whose gradient is stored)
CASES = [
    ("unet_evolutionary", "unet", "evolutionary"),
    ("unet-unitary_evolutionary", "unet-unitary", "evolutionary"),
    ("mlp_structure", "mlp", "structure"),
]


def energy(psi):
    return (psi.abs() ** 2).sum(dim=(1, 2, 3))


def evolutionary(psi0, psi):
    e0, e = energy(psi0), energy(psi)
    survival = ((e - 0.8 * e0).abs() / (e0 + 1e-6)).mean()
    magnitude = psi.abs()  # [B, H, W, d]
    symmetry = ((magnitude - torch.rot90(magnitude, 1, dims=[1, 2])) ** 2).mean()
    per_cell = magnitude.sum(dim=-1).flatten(1)
    complexity = (-torch.log(per_cell.std(dim=1) + 1e-6)).mean()
    total = 10 * survival + 5 * symmetry + 1 * complexity
    return total, {"survival": survival, "symmetry": symmetry, "complexity": complexity}


def mse_energy(psi0, psi):
    value = ((energy(psi) - energy(psi0)) ** 2).mean()
    return value, {"energy_mse": value}


def structure(psi0, psi):
    magnitude = psi.abs()
    vertical = (magnitude[:, 1:, :, :] - magnitude[:, :-1, :, :]).abs().mean()
    horizontal = (magnitude[:, :, 1:, :] - magnitude[:, :, :-1, :]).abs().mean()
    variation = vertical + horizontal
    mean = magnitude.mean()
    return mean + 0.1 * variation, {"mean_magnitude": mean, "total_variation": variation}


LOSSES = {"evolutionary": evolutionary, "mse-energy": mse_energy, "structure": structure}


def main():
    os.makedirs(OUT, exist_ok=True)
    for index, (case, arch, loss_name) in enumerate(CASES):
        weights = load_file(os.path.join(FIXTURES, f"{arch}.safetensors"))
        hidden = weights["net.0.weight" if arch == "mlp" else "inc.conv_block.0.weight"].shape[0]
        model = build(arch, D_STATE, hidden)
        model.load_state_dict(weights)
        model = model.double()

        generator = torch.Generator().manual_seed(50 + index)
        psi = torch.complex(
            torch.randn(BATCH, SIDE, SIDE, D_STATE, generator=generator),
            torch.randn(BATCH, SIDE, SIDE, D_STATE, generator=generator),
        )
        psi = psi / (torch.sqrt(torch.sum(psi.abs() ** 2, dim=-1, keepdim=True)) + 1e-9)
        psi0 = psi.to(torch.complex64).to(torch.complex128)

        psi, memory = psi0, None
        for _ in range(STEPS):
            psi, memory = qca_step(model, psi, GAMMA, ARCHS[arch]["unitary"], memory)

        metadata = {"arch": arch, "d_state": str(D_STATE), "hidden": str(hidden),
                    "gamma": str(GAMMA), "steps": str(STEPS), "loss": loss_name}
        for name, function in LOSSES.items():
            total, terms = function(psi0, psi)
            metadata[f"{name}.total"] = repr(total.item())
            for term, value in terms.items():
                metadata[f"{name}.{term}"] = repr(value.item())

        total, _ = LOSSES[loss_name](psi0, psi)
        model.zero_grad()
        total.backward()
        tensors = {
            "psi0_re": psi0.real.float().contiguous(),
            "psi0_im": psi0.imag.float().contiguous(),
        }
        norm = 0.0
        for name, param in model.named_parameters():
            tensors[f"grad.{name}"] = param.grad.float().contiguous()
            norm += param.grad.pow(2).sum().item()
        metadata["grad_norm"] = repr(norm ** 0.5)
        save_file(tensors, os.path.join(OUT, f"{case}.safetensors"), metadata=metadata)
        print(case, loss_name, metadata[f"{loss_name}.total"], "grad norm", metadata["grad_norm"])


if __name__ == "__main__":
    main()
