"""Writes the fixtures of the lab's own file formats under tests/fixtures/lab/ (run by hand,
after make_fixtures.py, whose weights and trajectories these reuse):

    pip install torch safetensors numpy
    python scripts/make_lab_fixtures.py

  ARCH_traced.pt             torch.jit.trace exports (as the lab's native_engine_wrapper.py
                             writes them) of the fixture weights of unet, unet-unitary,
                             unet-rmsnorm and deep-qca, each traced as the lab's class
                             (UNet, UNetUnitary, UNetUnitaryRMSNorm, DeepQCA)
  mock_traced.pt             a TorchScript model of one Conv2d (the lab's test mocks): refused
  output/experiments/LabUnitary/config.json and
  output/training_checkpoints/LabUnitary/*.pth
                             a lab experiment in the lab's layout: UNET_UNITARY, the
                             unet-unitary fixture weights in the newest checkpoint
                             (checkpoint_ep20.pth) and other weights in the older ones
  LabUnitary.zip             the same experiment as the lab exports it
  FirstEngine.zip            an experiment of the first engine (MODEL_ARCHITECTURE DEEP_QCA)
                             whose checkpoint is a training checkpoint as the first engine
                             wrote them (model_state_dict, optimizer_state_dict, history with
                             numpy floats, scaler_state_dict)
  qca_checkpoint_eps0.pth    that checkpoint alone
  snapshot.pt, snapshot.json psi0 of universe 0 of the unet fixture, complex64 [1, H, W, d],
                             and the snapshot manager's JSON (step 7)
  snapshot_c128.pt           universe 1, complex128 [H, W, d]
  convlstm_state.pt          the engine's save_state of the unet-convlstm law after 10 steps
                             from universe 0: {'psi', 'h_state', 'c_state'}
  convlstm_state_reference.safetensors
                             float64 reference: 1 and 10 steps from exactly those values
  large_sim_state_step_5.pth the first engine's {'step', 'x_real', 'x_imag'} of universe 0 of
                             the qca-operator-deep fixture
"""
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from lab_models import ARCHS, build, step  # noqa: E402
from make_fixtures import D_STATE, HIDDEN, DEFAULT_HIDDEN, gamma_of  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "lab")


def fixture_model(arch):
    """The law of tests/fixtures/ARCH.safetensors."""
    model = build(arch, D_STATE, HIDDEN.get(arch, DEFAULT_HIDDEN))
    model.load_state_dict(load_file(os.path.join(FIXTURES, f"{arch}.safetensors")))
    return model.float().eval()


def psi0(arch):
    """The fixture's psi0 [B, H, W, d], complex64."""
    tensors = load_file(os.path.join(FIXTURES, f"{arch}_trajectory.safetensors"))
    return torch.complex(tensors["psi0_re"], tensors["psi0_im"])


def trace_as(arch, model, class_name):
    """Traces `model` as the lab's class `class_name` (what the archive records)."""
    base = type(model)
    traceable = type(class_name, (base,), {"forward": lambda self, x: base.forward(self, x)[0]})
    model.__class__ = traceable
    example = torch.randn(1, 2 * D_STATE, 8, 8)
    return torch.jit.trace(model, example, strict=False)


def write_traced():
    for arch in ("unet", "unet-unitary", "unet-rmsnorm", "deep-qca"):
        traced = trace_as(arch, fixture_model(arch), ARCHS[arch]["lab_class"])
        traced.save(os.path.join(OUT, f"{arch}_traced.pt"))

    class MockModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2 * D_STATE, 2 * D_STATE, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    torch.jit.trace(MockModel(), torch.randn(1, 2 * D_STATE, 8, 8)).save(os.path.join(OUT, "mock_traced.pt"))


def checkpoint(weights, episode):
    return {"episode": episode, "model_state_dict": weights, "optimizer_state_dict": {"state": {}, "param_groups": []},
            "loss": 1.0, "metrics": {"survival": 0.1, "symmetry": 0.01}}


def write_experiment():
    name = "LabUnitary"
    config = {
        "EXPERIMENT_NAME": name,
        "MODEL_ARCHITECTURE": "UNET_UNITARY",
        "MODEL_PARAMS": {"d_state": D_STATE, "hidden_channels": DEFAULT_HIDDEN},
        "GAMMA_DECAY": gamma_of("unet-unitary"),
        "LR_RATE_M": 1e-4,
        "GRID_SIZE_TRAINING": 16,
        "GRID_SIZE_INFERENCE": 32,
        "QCA_STEPS_TRAINING": 16,
        "INITIAL_STATE_MODE_INFERENCE": "complex_noise",
        "TOTAL_EPISODES": 20,
    }
    root = os.path.join(OUT, "output")
    shutil.rmtree(root, ignore_errors=True)
    experiment = os.path.join(root, "experiments", name)
    checkpoints = os.path.join(root, "training_checkpoints", name)
    os.makedirs(experiment)
    os.makedirs(checkpoints)
    with open(os.path.join(experiment, "config.json"), "w") as f:
        json.dump(config, f, indent=4)
    newest = fixture_model("unet-unitary").state_dict()
    older = build("unet-unitary", D_STATE, DEFAULT_HIDDEN).state_dict()
    files = {"checkpoint_ep10.pth": checkpoint(older, 10), "best_model.pth": checkpoint(older, 15),
             "checkpoint_ep20.pth": checkpoint(newest, 20)}
    for file_name, content in files.items():
        torch.save(content, os.path.join(checkpoints, file_name))
    with zipfile.ZipFile(os.path.join(OUT, f"{name}.zip"), "w", zipfile.ZIP_DEFLATED) as export:
        export.write(os.path.join(experiment, "config.json"), "config.json")
        for file_name in files:
            export.write(os.path.join(checkpoints, file_name), f"checkpoints/{file_name}")


def write_first_engine():
    model = fixture_model("qca-operator-deep")
    # The first engine trained under DataParallel: its names carry `module.`.
    weights = {"module." + k: v for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6)
    saved = {
        "episode": 300,
        "model_state_dict": weights,
        "optimizer_state_dict": optimizer.state_dict(),
        "scaler_state_dict": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2000, "_growth_tracker": 17},
        "history": {"Loss": [np.float64(1.5), np.float64(1.25)], "R_Density_Target": [np.float32(0.5)],
                    "Gradient_Norm": [0.75, 0.5]},
    }
    path = os.path.join(OUT, "qca_checkpoint_eps0.pth")
    torch.save(saved, path)
    config = {"EXPERIMENT_NAME": "FirstEngine", "MODEL_ARCHITECTURE": "DEEP_QCA",
              "MODEL_PARAMS": {"d_state": D_STATE, "hidden_channels": HIDDEN["qca-operator-deep"]},
              "GRID_SIZE_TRAINING": 16}
    with zipfile.ZipFile(os.path.join(OUT, "FirstEngine.zip"), "w", zipfile.ZIP_DEFLATED) as export:
        export.writestr("FirstEngine/config.json", json.dumps(config))
        export.write(path, "FirstEngine/checkpoints/qca_checkpoint_eps0.pth")
    universe = psi0("qca-operator-deep")[0:1]
    torch.save({"step": 5, "x_real": universe.real.clone(), "x_imag": universe.imag.clone()},
               os.path.join(OUT, "large_sim_state_step_5.pth"))


def write_snapshots():
    states = psi0("unet")
    torch.save(states[0:1].clone(), os.path.join(OUT, "snapshot.pt"))
    with open(os.path.join(OUT, "snapshot.json"), "w") as f:
        json.dump({"experiment_name": "LabUnitary", "step": 7, "tensor_shape": [1, *states.shape[1:]]}, f)
    torch.save(states[1].to(torch.complex128).clone(), os.path.join(OUT, "snapshot_c128.pt"))


def write_convlstm_state():
    arch = "unet-convlstm"
    model = fixture_model(arch).double()
    psi = psi0(arch)[0:1].to(torch.complex128)
    memory = None
    with torch.no_grad():
        for _ in range(10):
            psi, memory = step(arch, model, psi, gamma_of(arch), memory)
    # What the engine saves (complex64 psi, f32 memory with its extra leading axis), and the
    # reference from exactly those stored values.
    saved_psi = psi.to(torch.complex64)
    hidden, cell = (t.float() for t in memory)
    torch.save({"psi": saved_psi, "h_state": hidden.unsqueeze(0), "c_state": cell.unsqueeze(0)},
               os.path.join(OUT, "convlstm_state.pt"))
    psi, memory = saved_psi.to(torch.complex128), (hidden.double(), cell.double())
    reference = {}
    with torch.no_grad():
        for number in range(1, 11):
            psi, memory = step(arch, model, psi, gamma_of(arch), memory)
            if number in (1, 10):
                reference[f"psi{number}_re"] = psi.real.float().contiguous()
                reference[f"psi{number}_im"] = psi.imag.float().contiguous()
    save_file(reference, os.path.join(OUT, "convlstm_state_reference.safetensors"),
              metadata={"arch": arch, "gamma": str(gamma_of(arch)), "steps": "10"})


def main():
    os.makedirs(OUT, exist_ok=True)
    write_traced()
    write_experiment()
    write_first_engine()
    write_snapshots()
    write_convlstm_state()
    for name in sorted(os.listdir(OUT)):
        print(name)


if __name__ == "__main__":
    main()
