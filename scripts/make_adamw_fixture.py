"""Writes PyTorch's AdamW steps to tests/fixtures/training/adamw.safetensors (run by hand):

    pip install torch safetensors
    python scripts/make_adamw_fixture.py

A seeded parameter takes STEPS steps of torch.optim.AdamW (betas 0.9/0.999, eps 1e-8,
decoupled weight decay) along seeded gradients, some of whose elements are zero, at a learning
rate that changes between steps as a schedule would change it. Computed in float64 from the
stored f32 values, so the fixture measures the engine's f32 optimizer against exact maths.

adamw.safetensors  param.0 [K, C, 3, 3]: the start; grad.T and param.T+1 for T in 0..STEPS;
                   exp_avg and exp_avg_sq after the last step (f32)
                   metadata: steps, lr.T, weight_decay, eps
"""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "training", "adamw.safetensors")
SHAPE = (6, 5, 3, 3)
LRS = [1e-2, 1e-2, 5e-3, 2e-2]
WEIGHT_DECAY = 0.1
EPS = 1e-8


def main():
    generator = torch.Generator().manual_seed(20261204)
    start = torch.randn(SHAPE, generator=generator).float()
    grads = []
    for step in range(len(LRS)):
        grad = torch.randn(SHAPE, generator=generator).float()
        # Elements with no gradient at some steps: their update is the moments' alone.
        grad[torch.rand(SHAPE, generator=generator) < 0.1] = 0.0
        if step == 0:
            grad[0, 0] = 0.0  # no gradient at all on the first step: the moments start at zero
        grads.append(grad)

    param = torch.nn.Parameter(start.double().clone())
    optimizer = torch.optim.AdamW([param], lr=LRS[0], betas=(0.9, 0.999), eps=EPS, weight_decay=WEIGHT_DECAY)
    tensors = {"param.0": start.contiguous()}
    metadata = {"steps": str(len(LRS)), "weight_decay": repr(WEIGHT_DECAY), "eps": repr(EPS)}
    for step, (grad, lr) in enumerate(zip(grads, LRS)):
        for group in optimizer.param_groups:
            group["lr"] = lr
        param.grad = grad.double().clone()
        optimizer.step()
        tensors[f"grad.{step}"] = grad.contiguous()
        tensors[f"param.{step + 1}"] = param.detach().float().contiguous()
        metadata[f"lr.{step}"] = repr(lr)
    state = optimizer.state[param]
    tensors["exp_avg"] = state["exp_avg"].float().contiguous()
    tensors["exp_avg_sq"] = state["exp_avg_sq"].float().contiguous()
    save_file(tensors, OUT, metadata=metadata)
    moved = (tensors[f"param.{len(LRS)}"] - start).abs().max().item()
    print(f"{OUT}: {len(LRS)} steps, largest change {moved:.3e}")


if __name__ == "__main__":
    main()
