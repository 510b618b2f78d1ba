#!/usr/bin/env python3
"""Load a chainrule checkpoint in PyTorch and check that it predicts what chainrule did.

    python3 tools/check_checkpoint.py RUN_DIR

RUN_DIR holds model.json and params.safetensors (as the mnist_mlp example writes them),
plus sample_x.npy and chainrule's logits for it, sample_logits.npy. The parameters are
loaded with safetensors.torch.load_file into the equivalent nn.Sequential with
load_state_dict(strict=True), so a missing, extra or misshapen tensor fails.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import build  # noqa: E402  (the one model-JSON-to-PyTorch mapping)


def main():
    run = Path(sys.argv[1])
    layers = json.loads((run / "model.json").read_text())["layers"]
    state = load_file(str(run / "params.safetensors"))
    dtype = next(iter(state.values())).dtype
    model = build(layers, dtype)
    model.load_state_dict(state, strict=True)
    x = torch.from_numpy(np.load(run / "sample_x.npy"))
    ours = np.load(run / "sample_logits.npy")
    with torch.no_grad():
        theirs = model(x).numpy()
    worst = float(np.abs(theirs - ours).max())
    same_class = bool((theirs.argmax(1) == ours.argmax(1)).all())
    print(f"{len(x)} samples: largest logit difference {worst:.3g}, same predicted class: {same_class}")
    if worst > 1e-4 or not same_class:
        sys.exit(1)


if __name__ == "__main__":
    main()
