"""The QCA step in PyTorch eager on the CPU, timed like `atheria bench`, printing the same JSON.

    pip install torch safetensors
    python scripts/bench_pytorch.py --grid 64 128 256                 # PyTorch alone
    python scripts/bench_pytorch.py --grid 64 128 256 --compare target/release/atheria

The model is one of the lab's laws (`--arch`, d_state 8, hidden 32 unless told otherwise) with
its default initialisation. With --compare, the same weights are written to a safetensors file
and the two engines are measured interleaved, pair by pair (PyTorch, atheria, PyTorch, atheria,
... `--pairs` times per grid, each a median over `--steps` steps): the ratio of each pair is taken
while the machine is in one state, and the table gives the median ratio with its min-max.

To measure the AVX2 paths on an AVX-512 machine, force every library down to AVX2:

    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATHERIA_SIMD=avx2 \
        python scripts/bench_pytorch.py --compare <atheria built with --no-default-features>

(`--no-default-features` drops the GEMM's AVX-512 kernels). The table states the ISA each side ran.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from lab_models import ARCHS, build, qca_step  # noqa: E402


def flops(arch, d, h, grid):
    """Convolution FLOPs of one forward, counted like atheria's `forward_flops`."""
    cells = grid * grid

    def conv3(cin, cout, scale):
        return 2 * 9 * cin * cout * cells * scale

    def block(cin, cout, scale):
        return conv3(cin, cout, scale) + conv3(cout, cout, scale)

    if arch == "mlp":
        return 2 * cells * (2 * d * h + h * h + h * 2 * d)
    total = (block(2 * d, h, 1) + block(h, 2 * h, 0.25) + block(2 * h, 4 * h, 1 / 16)
             + block(4 * h, 8 * h, 1 / 16) + 2 * 8 * h * 4 * h * 4 * cells / 16
             + block(6 * h, 4 * h, 0.25) + 2 * 4 * h * 2 * h * 4 * cells / 4
             + block(3 * h, h, 1) + 2 * h * 2 * d * cells)
    if arch == "unet-convlstm":
        total += conv3(8 * h, 16 * h, 1 / 16)
    return total


def measure(model, arch, d, h, grid, batch, steps, warmup, gamma, threads):
    unitary = ARCHS[arch]["unitary"]
    generator = torch.Generator().manual_seed(0)
    psi = torch.complex(torch.randn(batch, grid, grid, d, generator=generator),
                        torch.randn(batch, grid, grid, d, generator=generator))
    psi = psi / (psi.abs().pow(2).sum(-1, keepdim=True).sqrt() + 1e-9)
    memory = None
    times = []
    with torch.no_grad():
        for index in range(warmup + steps):
            started = time.perf_counter()
            psi, memory = qca_step(model, psi, gamma, unitary, memory)
            elapsed = time.perf_counter() - started
            if index >= warmup:
                times.append(elapsed)
    return record(times, arch, d, h, grid, batch, threads, "step", 1)


def evolutionary_loss(psi0, psi):
    """The lab's default loss (see scripts/make_training_fixtures.py)."""
    e0, e = (psi0.abs() ** 2).sum(dim=(1, 2, 3)), (psi.abs() ** 2).sum(dim=(1, 2, 3))
    survival = ((e - 0.8 * e0).abs() / (e0 + 1e-6)).mean()
    magnitude = psi.abs()
    symmetry = ((magnitude - torch.rot90(magnitude, 1, dims=[1, 2])) ** 2).mean()
    complexity = (-torch.log(magnitude.sum(dim=-1).flatten(1).std(dim=1) + 1e-6)).mean()
    return 10 * survival + 5 * symmetry + complexity


def measure_train(model, arch, d, h, grid, batch, steps, warmup, gamma, threads):
    """One training step as the lab's trainer takes it: a fresh random universe, one QCA step,
    the evolutionary loss, backward, gradient clipping at 1.0 and AdamW."""
    unitary = ARCHS[arch]["unitary"]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(0)
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        psi0 = torch.complex(torch.randn(batch, grid, grid, d, generator=generator),
                             torch.randn(batch, grid, grid, d, generator=generator))
        psi0 = psi0 / (psi0.abs().pow(2).sum(-1, keepdim=True).sqrt() + 1e-9)
        psi, _ = qca_step(model, psi0, gamma, unitary, None)
        loss = evolutionary_loss(psi0, psi)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - started
        if index >= warmup:
            times.append(elapsed)
    model.eval()
    return record(times, arch, d, h, grid, batch, threads, "train_step", 3)


def record(times, arch, d, h, grid, batch, threads, mode, forwards):
    median = statistics.median(times)
    cells = batch * grid * grid
    return {
        "backend": "pytorch",
        "device": f"cpu, {threads} threads, torch {torch.__version__}",
        "arch": arch, "d_state": d, "hidden": h, "grid": grid, "batch": batch, "mode": mode,
        "ms_per_step": median * 1e3,
        "steps_per_s": 1.0 / median,
        "mcells_per_s": cells / median / 1e6,
        "gflops": forwards * flops(arch, d, h, grid) * batch / median / 1e9,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--arch", default="unet", choices=sorted(ARCHS))
    parser.add_argument("--d-state", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true",
                        help="time a training step (forward, loss, backward, AdamW) instead")
    parser.add_argument("--compare", metavar="ATHERIA", help="atheria binary to measure side by side")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs per grid with --compare")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build(args.arch, args.d_state, args.hidden).eval()
    measure_one = measure_train if args.train else measure

    def pytorch(grid):
        return measure_one(model, args.arch, args.d_state, args.hidden, grid, args.batch,
                           args.steps, args.warmup, args.gamma, args.threads)

    if not args.compare:
        for grid in args.grid:
            print(json.dumps(pytorch(grid)), flush=True)
        return

    what = "training step" if args.train else "step"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)

        def atheria(grid):
            command = [args.compare, "bench", "--json", "--device", "cpu",
                       "--weights", weights, "--arch", args.arch, "--d-state", str(args.d_state),
                       "--hidden", str(args.hidden), "--batch", str(args.batch),
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--grid", str(grid)] + (["--train"] if args.train else [])
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            return next(json.loads(line) for line in output.splitlines() if line.startswith("{"))

        for grid in args.grid:
            theirs, ours = [], []
            for _ in range(args.pairs):
                theirs.append(pytorch(grid))
                ours.append(atheria(grid))
                print(json.dumps(theirs[-1]), flush=True)
                print(json.dumps(ours[-1]), flush=True)
            rows.append((grid, theirs, ours))

    torch_isa = torch.backends.cpu.get_cpu_capability()
    cpu = rows[0][2][0]["cpu"]
    print()
    print(f"{what}: {args.arch} d{args.d_state} h{args.hidden}, batch {args.batch}, {args.threads} threads, "
          f"{args.pairs} interleaved pairs of {args.steps}-step medians")
    print(f"PyTorch {torch.__version__} ({torch_isa}); atheria kernels {cpu['kernels']}, gemm {cpu['gemm']} "
          f"on {cpu['cpu_model']}")
    print(f"| grid | PyTorch ms/{what} | atheria cpu ms/{what} | atheria speed vs PyTorch, median (min-max) |")
    print("|---:|---:|---:|---:|")
    for grid, theirs, ours in rows:
        ratios = sorted(t["ms_per_step"] / o["ms_per_step"] for t, o in zip(theirs, ours))
        median_of = lambda records: statistics.median(r["ms_per_step"] for r in records)  # noqa: E731
        print(f"| {grid} | {median_of(theirs):.2f} | {median_of(ours):.2f} | "
              f"**{statistics.median(ratios):.2f}x** ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")


if __name__ == "__main__":
    main()
