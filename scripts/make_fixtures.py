"""Writes the PyTorch reference fixtures under tests/fixtures/ (run by hand):

    pip install torch safetensors
    python scripts/make_fixtures.py

For each architecture:
  ARCH.safetensors             weights, the lab's state_dict names, f32
  ARCH_trajectory.safetensors  psi0 and psi after 1 and 20 steps (re/im, [B, H, W, d], f32),
                               ConvLSTM memory after 20 steps; gamma etc. in the metadata
  pytorch/ARCH.pth             the same weights as a bare state_dict (torch.save)
  pytorch/ARCH_checkpoint.pth  the weights inside a training checkpoint dict, as the lab's
                               trainer writes it (see CHECKPOINTS below)

and, for the import tests, the same weights wrapped the other ways a user's file can be:
  pytorch/{unet,mlp}_compiled.pt  bare state_dict with torch.compile's `_orig_mod.` prefix (the
                                  other architectures' checkpoints already carry it)
  pytorch/mlp_dataparallel.pt     bare state_dict with DataParallel's `module.` prefix
  pytorch/mlp_legacy.pth          the pre-1.6 (non-zip) serialization
  pytorch/mlp_f64.pth, mlp_f16.pth, mlp_bf16.pth   the weights in other float dtypes
  pytorch/mlp_int.pth             the weights plus an int64 tensor `step` (must be rejected)
  pytorch/mlp_module.pth          a whole pickled nn.Module rather than a state_dict (rejected)

The reference runs in float64 from the f32 values that are stored, so the fixtures measure the
engine's f32 arithmetic against exact maths rather than against another f32 implementation.
The learned term is made to matter: outc is scaled far above its N(0, 1e-5) initialisation and
the norm layers get non-trivial affine parameters.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from lab_models import ARCHS, build, step  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
BATCH, HEIGHT, WIDTH, D_STATE = 2, 16, 20, 3
GAMMA = 0.05
STEPS = 20
# Hidden width 7 makes the norm layers 7, 14, 28 and 56 channels wide: groups 1, 1, 1 (28/8 = 3
# does not divide 28) and 7, covering every branch of the lab's group rule.
HIDDEN = {"mlp": 16, "deep-qca": 10, "qca-operator-deep": 12}
DEFAULT_HIDDEN = 7
OUTC_STD = 0.08
# Checkpoints that carry Adam's populated moments (the others carry an empty optimizer state,
# as a checkpoint written before the first step does).
FULL_OPTIMIZER_STATE = {"unet", "mlp"}

# How each architecture's training checkpoint is wrapped: the state_dict key and the prefix its
# names carry (torch.compile's `_orig_mod.`, DataParallel's `module.` as the first engine
# saved them).
CHECKPOINTS = {
    "unet": ("model_state_dict", ""),
    "unet-unitary": ("model_state_dict", "_orig_mod."),
    "unet-rmsnorm": ("model_state_dict", "_orig_mod."),
    "unet-unitary-rmsnorm": ("state_dict", "_orig_mod."),
    "unet-convlstm": ("model_state_dict", "_orig_mod."),
    "mlp": ("state_dict", ""),
    "deep-qca": ("model_state_dict", "_orig_mod."),
    "qca-operator-deep": ("model_state_dict", "module."),
}


def gamma_of(arch):
    """The decay of the engine the law ran in: none in the first engine."""
    return 0.0 if ARCHS[arch].get("first_engine") else GAMMA


def make_model(arch, seed):
    """The law of `arch` with its learned terms made large enough to matter."""
    torch.manual_seed(seed)
    hidden = HIDDEN.get(arch, DEFAULT_HIDDEN)
    model = build(arch, D_STATE, hidden)
    with torch.no_grad():
        for name, param in model.named_parameters():
            last_layer = arch == "deep-qca" and name == "processing_net.4.weight"
            if name.startswith("outc.weight") or last_layer:
                param.normal_(0.0, OUTC_STD)
            elif name.startswith("outc.bias"):
                param.normal_(0.0, 0.02)
            elif name.startswith("M_bias"):
                param.normal_(0.0, 0.05)
            elif param.dim() == 1 and "conv_block" in name:
                # GroupNorm/RMSNorm affine parameters: weight near 1, bias near 0.
                if name.endswith("weight"):
                    param.copy_(1.0 + 0.2 * torch.randn_like(param))
                else:
                    param.copy_(0.1 * torch.randn_like(param))
    return model.float(), hidden


def write_variants(arch, model, weights):
    out = os.path.join(OUT, "pytorch")
    if arch in ("unet", "mlp"):
        torch.save({"_orig_mod." + k: v for k, v in weights.items()},
                   os.path.join(out, f"{arch}_compiled.pt"))
    if arch != "mlp":
        return
    torch.save({"module." + k: v for k, v in weights.items()}, os.path.join(out, "mlp_dataparallel.pt"))
    torch.save(weights, os.path.join(out, "mlp_legacy.pth"), _use_new_zipfile_serialization=False)
    for name, dtype in (("f64", torch.float64), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        torch.save({k: v.to(dtype) for k, v in weights.items()}, os.path.join(out, f"mlp_{name}.pth"))
    torch.save(dict(weights, step=torch.tensor(3)), os.path.join(out, "mlp_int.pth"))
    torch.save(model, os.path.join(out, "mlp_module.pth"))


def relative_error(a, b):
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def trajectory(arch, model, psi0, dtype, steps=STEPS, memory=None):
    ctype = torch.complex128 if dtype == torch.float64 else torch.complex64
    model = model.to(dtype)
    psi = psi0.to(ctype)
    states = {0: psi}
    with torch.no_grad():
        for number in range(1, steps + 1):
            psi, memory = step(arch, model, psi, gamma_of(arch), memory)
            states[number] = psi
    return states, memory


def main():
    os.makedirs(os.path.join(OUT, "pytorch"), exist_ok=True)
    summary = {}
    for index, arch in enumerate(ARCHS):
        model, hidden = make_model(arch, seed=100 + index)
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, os.path.join(OUT, f"{arch}.safetensors"),
                  metadata={"arch": arch, "d_state": str(D_STATE), "hidden": str(hidden)})
        torch.save(weights, os.path.join(OUT, "pytorch", f"{arch}.pth"))

        write_variants(arch, model, weights)

        key, prefix = CHECKPOINTS[arch]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
        if arch in FULL_OPTIMIZER_STATE:
            # A real trainer's checkpoint carries Adam's moments: take one step on a copy so
            # that the state is populated while the saved weights stay as they are.
            shadow = build(arch, D_STATE, hidden)
            shadow.load_state_dict(weights)
            optimizer = torch.optim.AdamW(shadow.parameters(), lr=1e-4, weight_decay=1e-5)
            x = torch.randn(1, 2 * D_STATE, 8, 8)
            shadow(x)[0].pow(2).mean().backward()
            optimizer.step()
        checkpoint = {
            "episode": 1500 + index,
            key: {prefix + k: v for k, v in weights.items()},
            "optimizer_state_dict": optimizer.state_dict(),
            "metrics": {"loss": 1.25, "survival": 0.031, "symmetry": 0.0042},
        }
        torch.save(checkpoint, os.path.join(OUT, "pytorch", f"{arch}_checkpoint.pth"))

        generator = torch.Generator().manual_seed(7 + index)
        psi = torch.complex(
            torch.randn(BATCH, HEIGHT, WIDTH, D_STATE, generator=generator),
            torch.randn(BATCH, HEIGHT, WIDTH, D_STATE, generator=generator),
        )
        psi = psi / (torch.sqrt(torch.sum(psi.abs() ** 2, dim=-1, keepdim=True)) + 1e-9)
        psi0 = psi.to(torch.complex64)  # stored values; the reference starts from exactly these

        exact, memory = trajectory(arch, model, psi0, torch.float64)
        single, _ = trajectory(arch, model, psi0, torch.float32)
        # How far the learned term moves psi: the fixture is useless if it barely does.
        decay_only = psi0.to(torch.complex128)
        moved = relative_error(exact[STEPS], decay_only)

        tensors = {}
        for step in (0, 1, STEPS):
            tensors[f"psi{step}_re"] = exact[step].real.float().contiguous()
            tensors[f"psi{step}_im"] = exact[step].imag.float().contiguous()
        if memory is not None:
            tensors[f"h{STEPS}"] = memory[0].float().contiguous()
            tensors[f"c{STEPS}"] = memory[1].float().contiguous()
        metadata = {"arch": arch, "d_state": str(D_STATE), "hidden": str(hidden),
                    "gamma": str(gamma_of(arch)), "steps": str(STEPS)}
        save_file(tensors, os.path.join(OUT, f"{arch}_trajectory.safetensors"), metadata=metadata)

        summary[arch] = {
            "hidden": hidden,
            "torch_f32_error_1": relative_error(single[1], exact[1]),
            "torch_f32_error_20": relative_error(single[STEPS], exact[STEPS]),
            "moved_by_law_20": moved,
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
