#!/usr/bin/env python3
"""Load a chainrule checkpoint in PyTorch and check that it predicts what chainrule does.

    python3 tools/check_checkpoint.py RUN_DIR                       # sample_x.npy + sample_logits.npy in RUN_DIR
    python3 tools/check_checkpoint.py RUN_DIR --mnist DATA_DIR [--count 1000]

The first form reads the samples and chainrule's logits that the mnist_mlp example
writes beside its checkpoint. The second takes a `chainrule train` run folder: it runs
`chainrule predict` on the first COUNT MNIST test images and compares its class
probabilities with PyTorch's, on the same images scaled as the run's state.json says.

Either way the parameters (and batch norm's buffers) are loaded with
safetensors.torch.load_file into the equivalent nn.Sequential with
load_state_dict(strict=True), so a missing, extra or misshapen tensor fails, and the
model runs in evaluation mode (no dropout, running statistics).
"""
import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import build  # noqa: E402  (the one model-JSON-to-PyTorch mapping)

ROOT = Path(__file__).resolve().parent.parent


def files(run):
    """A run folder's checkpoint files: in its `checkpoint` folder, or (an older run, or
    the mnist_mlp example's output) beside its other files."""
    return run / "checkpoint" if (run / "checkpoint").is_dir() else run


def load_model(run):
    run = files(run)
    spec = json.loads((run / "model.json").read_text())
    state = load_file(str(run / "params.safetensors"))
    dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    model = build(spec["layers"], dtype)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, spec.get("input"), dtype


def mnist_images(folder, count):
    for name in ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"):
        for suffix in ("", ".gz"):
            path = folder / (name + suffix)
            if path.exists():
                data = (gzip.open if suffix else open)(path, "rb").read()
                images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 784)
                return images[:count].astype(np.float32)
    raise FileNotFoundError(f"no t10k images in {folder}")


def report(worst, same_class, count, what):
    print(f"{count} samples: largest {what} difference {worst:.3g}, same predicted class: {same_class}")
    if worst > 1e-4 or not same_class:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--mnist", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    model, input_shape, dtype = load_model(args.run)
    if args.mnist is None:
        x = torch.from_numpy(np.load(args.run / "sample_x.npy"))
        ours = np.load(args.run / "sample_logits.npy")
        with torch.no_grad():
            theirs = model(x).numpy()
        report(float(np.abs(theirs - ours).max()), bool((theirs.argmax(1) == ours.argmax(1)).all()), len(x),
               "logit")
        return
    pixels = mnist_images(args.mnist, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "p.npy"
        np.save(x_path, pixels)
        subprocess.run(["cargo", "run", "-q", "--release", "-p", "chainrule-cli", "--", "predict", str(args.run),
                        "--x", str(x_path), "--out", str(out_path)], cwd=ROOT, check=True)
        ours = np.load(out_path)
    scaler = json.loads((files(args.run) / "state.json").read_text())["scaler"]
    x = (pixels - np.array(scaler["shift"], dtype=np.float64)) / np.array(scaler["scale"], dtype=np.float64)
    x = torch.from_numpy(x.astype(np.float32)).to(dtype)
    if input_shape is not None:
        x = x.reshape(-1, *input_shape)
    with torch.no_grad():
        theirs = torch.softmax(model(x), dim=1).numpy()
    # predict's columns: the class, then one probability per class.
    classes, probabilities = ours[:, 0].astype(np.int64), ours[:, 1:]
    report(float(np.abs(theirs - probabilities).max()), bool((theirs.argmax(1) == classes).all()), len(x),
           "probability")


if __name__ == "__main__":
    main()
