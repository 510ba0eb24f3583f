"""Train the ``digits`` model of the odesolve zoo and write it as package data.

    python scripts/train_digits.py                      # trains, writes odesolve/toy/weights/digits.pt
    python scripts/train_digits.py --table              # Frechet distance vs method and NFE (docs/digits.md)

Data: scikit-learn's 8x8 handwritten digits (1797 images, grey levels 0..16), scaled by x / 8 - 1
to [-1, 1] (needs ``pip install scikit-learn``; the images and labels are stored in the weights
file, so using the model does not). Path: DDPM's linear betas (1e-4 to 0.02, T = 1000) as
``odesolve.paths.VPDiscrete.from_schedule("linear", 1000)``; time is the timestep index.
Objective: eps-prediction, mean squared error, times drawn uniformly from the continuous interval
[0, T - 1] (the DDPM weighting, but between the integer timesteps too, where multistage solvers
and uniform-lambda grids evaluate the network). The network is conditioned on the half log-SNR
lambda(t) through low-frequency Fourier features (odesolve.toy.zoo.noise_embedding), which keeps
its probability-flow ODE smooth in lambda. Optimiser: AdamW, linear warm-up then
cosine decay, gradient clipping at 1, an exponential moving average of the weights (the EMA is
what is saved). Deterministic: one seeded torch.Generator draws every batch, time and noise, and
torch runs with deterministic algorithms; bit-identical for the same seed, torch version and
thread count.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from odesolve.paths import VPDiscrete
from odesolve.toy.zoo import DigitsNet

OUT = ROOT / "odesolve" / "toy" / "weights" / "digits.pt"


def load_digits_uint8():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.uint8)  # (1797, 8, 8), values 0..16
    return images, torch.tensor(d.target, dtype=torch.uint8)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)

    images, labels = load_digits_uint8()
    x_data = (images.to(torch.float32) / 8.0 - 1.0).unsqueeze(1)
    path_cfg = {"schedule": "linear", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}
    path = VPDiscrete.from_schedule(**path_cfg)
    T = int(path.t_max) + 1
    net_cfg = {"shape": [1, 8, 8], "hidden": args.hidden, "depth": args.depth, "emb": args.emb}
    net = DigitsNet(**net_cfg)
    ema = copy.deepcopy(net).requires_grad_(False)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        u = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * u))

    print(
        f"digits: {x_data.shape[0]} images, net {n_params / 1e6:.2f}M parameters, {args.steps} steps of batch "
        f"{args.batch}, {args.threads} thread(s)",
        flush=True,
    )
    t0, c0, running = time.time(), time.process_time(), None
    for step in range(args.steps):
        idx = torch.randint(0, x_data.shape[0], (args.batch,), generator=g)
        x0 = x_data[idx]
        t = torch.rand(args.batch, generator=g, dtype=torch.float64) * (T - 1)
        eps = torch.randn(x0.shape, generator=g)
        a = path.alpha(t).to(torch.float32).view(-1, 1, 1, 1)
        s = path.sigma(t).to(torch.float32).view(-1, 1, 1, 1)
        loss = F.mse_loss(net(a * x0 + s * eps, path.lambda_(t)), eps)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        lv = loss.item()
        running = lv if running is None else 0.99 * running + 0.01 * lv
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.time() - t0
            print(
                f"step {step + 1:6d}  loss {running:.4f}  lr {lr_at(step):.2e}  {el:6.0f} s wall, "
                f"{time.process_time() - c0:6.0f} s cpu, eta {el / (step + 1) * (args.steps - step - 1):5.0f} s",
                flush=True,
            )
    wall, cpu = time.time() - t0, time.process_time() - c0
    state = {k: v.to(torch.float16) if args.half and v.is_floating_point() else v for k, v in ema.state_dict().items()}
    return {
        "format": 1,
        "config": {
            "name": "digits",
            "arch": "DigitsNet",
            "net": net_cfg,
            "path": path_cfg,
            "prediction": "eps",
            "data": "sklearn.datasets.load_digits, x / 8 - 1",
            "train": {
                "seed": args.seed,
                "steps": args.steps,
                "batch": args.batch,
                "lr": args.lr,
                "lr_min": args.lr_min,
                "warmup": args.warmup,
                "weight_decay": args.weight_decay,
                "ema": args.ema,
                "threads": args.threads,
                "times": "uniform on [0, T-1]",
                "cond": "lambda(t), zoo.noise_embedding",
                "loss": "mse eps",
                "final_loss": running,
                "wall_seconds": round(wall, 1),
                "cpu_seconds": round(cpu, 1),
                "torch": str(torch.__version__),
                "weights_dtype": "float16" if args.half else "float32",
            },
        },
        "state_dict": state,
        "data": images,
        "labels": labels,
    }


@torch.inference_mode()
def table(args) -> None:
    """Frechet distance of classifier features, samples vs the data, per method and NFE."""
    import odesolve as ods
    from odesolve.commands.sample import make_grid, steps_for_nfe
    from odesolve.toy import metrics, reference, zoo

    torch.set_num_threads(args.threads)
    model = zoo.load("digits")
    clf, tr, te = metrics.digits_classifier(seed=0)
    x = zoo.data("digits")
    acc = float((clf(x[te]).argmax(1) == zoo.labels("digits")[te]).float().mean())
    feats_data = clf.features(x)
    n = args.table_n
    x_T = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(args.seed))
    ref = reference.solve_by_halving(model, x_T, steps=args.table_ref_steps)
    fd_ref = metrics.frechet_distance(clf.features(ref), feats_data)
    fd_floor = metrics.frechet_distance(clf.features(x[tr][: min(n, tr.numel())]), clf.features(x[te]))
    print(f"classifier test accuracy {acc:.4f}; {n} samples per entry; grid {args.grid}")
    print(f"FD(reference ODE solution, data) = {fd_ref:.3f};  FD(train split, test split) = {fd_floor:.3f}")
    nfes = [int(v) for v in args.table_nfe.split(",")]
    methods = args.table_methods.split(",")
    print("| method | " + " | ".join(f"NFE {v}" for v in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for name in methods:
        cells = []
        for nfe in nfes:
            steps = steps_for_nfe(model.path, name, nfe, args.grid)
            if steps is None:
                cells.append("-")
                continue
            grid = make_grid(model.path, steps, args.grid)
            out = ods.sample(model, x_T, grid, method=name)
            calls = ods.methods.get(name).compile(model.path, grid).calls
            fd = metrics.frechet_distance(clf.features(out), feats_data)
            err = float((out - ref).pow(2).mean().sqrt())
            cells.append(f"{fd:.2f} ({err:.3f})" + ("" if calls == nfe else f" [{calls}]"))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--emb", type=int, default=128)
    p.add_argument(
        "--half",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store the weights in float16 (half the file; loaded as float32)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("ODESOLVE_THREADS", "1")),
        help="torch threads (1 by default: on a shared 2-core machine 2 threads ran slower)",
    )
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the Frechet-distance table instead of training")
    p.add_argument("--table-n", type=int, default=1000)
    p.add_argument("--table-ref-steps", type=int, default=256)
    p.add_argument("--table-nfe", default="5,10,20")
    p.add_argument(
        "--table-methods",
        default="ddim,dpmpp-2m,dpmpp-3m,dpmpp-3m-corrected,unipc-bh2-3,deis-3,ipndm,dpm-solver-2,dpm-solver-3,heun",
    )
    p.add_argument("--grid", default="trailing", help="time grid of the table: trailing or lambda")
    args = p.parse_args(argv)
    if args.table:
        table(args)
        return 0
    ck = train(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, args.out)
    tr = ck["config"]["train"]
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {tr['wall_seconds']:.0f} s wall, "
        f"{tr['cpu_seconds']:.0f} s cpu"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
