#!/usr/bin/env python3
"""Run the speed workloads in chainrule and in PyTorch on the same data, side by side.

    pip install torch numpy && python3 tools/bench_pytorch.py MNIST_DIR [--runs 3] [--threads 2] [--workloads w1,w2,w3,w4]

The two systems take turns, run after run (chainrule's `bench --runs 1 --json`, release
build, then PyTorch's same workloads in the same order, with the same data in memory,
timing only the training loop; see `chainrule bench --help` for W1-W4), so that a
change in the machine's load falls on both alike. Prints medians and the ratio
PyTorch / chainrule (above 1: chainrule is faster).
"""
import argparse
import gzip
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def idx(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    rank = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def find(folder, stem):
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            p = folder / (name + suffix)
            if p.exists():
                return p
    raise FileNotFoundError(stem)


def mnist(folder, split):
    x = idx(find(folder, f"{split}-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(find(folder, f"{split}-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def epoch(sizes, batch, train, test):
    model = mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = train
    # Batches cut before timing, in file order, the last one partial.
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    start = time.perf_counter()
    for xb, yb in batches:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(test[0]).argmax(1) == test[1]).float().mean().item()
    return seconds, accuracy


def xor_steps(steps=100_000):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.MSELoss()
    xs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    ys = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    samples = [(xs[i:i + 1], ys[i:i + 1]) for i in range(4)]
    start = time.perf_counter()
    for i in range(steps):
        xb, yb = samples[i % 4]
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    return time.perf_counter() - start


#: W4 times this many batches of 64 and scales to a 60,000-sample epoch, as
#: `chainrule bench` does.
W4_BATCHES = 100


def cnn_epoch(train):
    """PyTorch's MNIST example network, Adadelta lr 1.0, batch 64, training mode."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Dropout(0.25), torch.nn.Flatten(), torch.nn.Linear(9216, 128),
        torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(128, 10))
    model.train()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = train
    rows = W4_BATCHES * 64
    x = ((x[:rows] - 0.1307) / 0.3081).reshape(-1, 1, 28, 28).contiguous()
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, rows, 64)]
    start = time.perf_counter()
    for xb, yb in batches:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    return (time.perf_counter() - start) * 60_000 / rows


#: The speed issues' targets for chainrule (2 threads, f32).
TARGETS = {"W1": "0.20 s", "W2": "3.5 s", "W3": "2 µs", "W4": "14 s"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default="w1,w2,w3,w4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "chainrule-cli"], cwd=ROOT, check=True)
    folder = Path(args.data)
    train, test = mnist(folder, "train"), mnist(folder, "t10k")
    workloads = [w.strip().upper() for w in args.workloads.split(",")]
    run_theirs = {
        "W1": lambda: epoch([784, 128, 10], 64, train, test),
        "W2": lambda: epoch([784, 1024, 1024, 10], 256, train, test),
        "W3": lambda: (xor_steps(), None),
        "W4": lambda: (cnn_epoch(train), None),
    }
    ours, theirs = {}, {name: [] for name in workloads}
    for run in range(args.runs):
        # One run of each workload in chainrule, then the same in PyTorch.
        for t in json.loads(subprocess.run(
                [str(ROOT / "target/release/chainrule"), "bench", "--data", args.data,
                 "--workloads", args.workloads, "--runs", "1", "--threads", str(args.threads), "--json"],
                cwd=ROOT, check=True, capture_output=True, text=True).stdout):
            if t["workload"] in ours:
                ours[t["workload"]]["seconds"] += t["seconds"]
            else:
                ours[t["workload"]] = t
        for name in workloads:
            theirs[name].append(run_theirs[name]())
    ours = list(ours.values())
    print(f"medians over {args.runs} interleaved runs (min-max); W1, W2: seconds per epoch (test accuracy); "
          f"W3: microseconds per step; W4: seconds per epoch, scaled from {W4_BATCHES} batches; "
          f"target: the speed issues'")
    print(f"{'workload':<9} {'chainrule':>28} {'PyTorch ' + torch.__version__:>28} {'PyTorch/chainrule':>18} {'target':>8}")
    for t in ours:
        name = t["workload"]
        mine, yours = t["seconds"], [s for s, _ in theirs[name]]
        ours_median, torch_median = statistics.median(mine), statistics.median(yours)
        if name == "W3":
            scale, unit, digits = 1e6 / t["units"], "µs", 2
            notes = ("", "")
        elif name == "W4":
            scale, unit, digits = 1.0, "s", 1
            notes = ("", "")
        else:
            scale, unit, digits = 1.0, "s", 3
            notes = (f" {100 * t['accuracy']:.1f}%", f" {100 * theirs[name][-1][1]:.1f}%")

        def show(times, note):
            return (f"{statistics.median(times) * scale:.{digits}f} "
                    f"({min(times) * scale:.{digits}f}-{max(times) * scale:.{digits}f}) {unit}{note}")

        print(f"{name:<9} {show(mine, notes[0]):>28} {show(yours, notes[1]):>28} "
              f"{torch_median / ours_median:>17.2f}x {TARGETS[name]:>8}")


if __name__ == "__main__":
    main()
