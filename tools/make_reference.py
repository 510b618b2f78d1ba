#!/usr/bin/env python3
"""Generate PyTorch reference cases for chainrule's layers, losses and optimizers.

Each case is a folder under crates/chainrule/tests/reference/ holding exactly the
files of the interchange contract (spec/interchange.md):

    model.json, params.safetensors, x.npy, y.npy, config.json   (inputs)
    expected.json        {"loss": <loss at params over all of x>, "dtype": ...}
    extra.json           (some cases) options beyond the contract: "schedule", "clip_grad_norm"
    grads.safetensors    d loss / d parameter, all of x as one batch (`chainrule grad`)
    trained.safetensors  parameters after training as config.json says (`chainrule train`)

Run from the repository root:  pip install torch safetensors numpy && python3 tools/make_reference.py
The tests read the committed files; they never need Python.
"""
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent / "crates" / "chainrule" / "tests" / "reference"

LOSSES = {
    "mse": lambda p, y: torch.nn.MSELoss()(p, y),
    "sse": lambda p, y: torch.nn.MSELoss(reduction="sum")(p, y),
    "half_sse": lambda p, y: 0.5 * torch.nn.MSELoss(reduction="sum")(p, y),
    "mae": lambda p, y: torch.nn.L1Loss()(p, y),
    "huber": lambda p, y: torch.nn.HuberLoss(delta=1.0)(p, y),
    "bce": lambda p, y: torch.nn.BCELoss()(p, y),
    "bce_logits": lambda p, y: torch.nn.BCEWithLogitsLoss()(p, y),
    "cross_entropy": lambda p, y: torch.nn.CrossEntropyLoss()(p, y),
}


def build(layers, dtype):
    modules = []
    for layer in layers:
        kind = layer["type"]
        if kind == "linear":
            modules.append(torch.nn.Linear(layer["in"], layer["out"], bias=layer.get("bias", True)))
        elif kind == "relu":
            modules.append(torch.nn.ReLU())
        elif kind == "leaky_relu":
            modules.append(torch.nn.LeakyReLU(layer.get("slope", 0.01)))
        elif kind == "sigmoid":
            modules.append(torch.nn.Sigmoid())
        elif kind == "tanh":
            modules.append(torch.nn.Tanh())
        elif kind == "softmax":
            modules.append(torch.nn.Softmax(dim=-1))
        elif kind == "identity":
            modules.append(torch.nn.Identity())
        elif kind == "gelu":
            modules.append(torch.nn.GELU(approximate=layer.get("approximate", "none")))
        elif kind == "silu":
            modules.append(torch.nn.SiLU())
        elif kind == "elu":
            modules.append(torch.nn.ELU(alpha=layer.get("alpha", 1.0)))
        elif kind == "softplus":
            modules.append(torch.nn.Softplus(beta=layer.get("beta", 1.0), threshold=layer.get("threshold", 20.0)))
        elif kind == "conv2d":
            modules.append(torch.nn.Conv2d(layer["in_channels"], layer["out_channels"], pair(layer["kernel_size"]),
                                           stride=pair(layer.get("stride", 1)), padding=pair(layer.get("padding", 0)),
                                           dilation=pair(layer.get("dilation", 1)), bias=layer.get("bias", True)))
        elif kind == "max_pool2d":
            k = pair(layer["kernel_size"])
            modules.append(torch.nn.MaxPool2d(k, stride=pair(layer.get("stride", list(k))), padding=pair(layer.get("padding", 0))))
        elif kind == "avg_pool2d":
            k = pair(layer["kernel_size"])
            modules.append(torch.nn.AvgPool2d(k, stride=pair(layer.get("stride", list(k))), padding=pair(layer.get("padding", 0))))
        elif kind == "flatten":
            modules.append(torch.nn.Flatten())
        elif kind == "dropout":
            modules.append(torch.nn.Dropout(layer.get("p", 0.5)))
        elif kind in ("batch_norm1d", "batch_norm2d"):
            cls = torch.nn.BatchNorm1d if kind == "batch_norm1d" else torch.nn.BatchNorm2d
            modules.append(cls(layer["num_features"], eps=layer.get("eps", 1e-5), momentum=layer.get("momentum", 0.1),
                               affine=layer.get("affine", True)))
        elif kind == "layer_norm":
            modules.append(torch.nn.LayerNorm(layer["normalized_shape"], eps=layer.get("eps", 1e-5),
                                              elementwise_affine=layer.get("elementwise_affine", True)))
        else:
            raise ValueError(kind)
    return torch.nn.Sequential(*modules).to(dtype)


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def optimizer(params, config):
    c = dict(config)
    kind = c.pop("type")
    if "betas" in c:
        c["betas"] = tuple(c["betas"])
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta}[kind]
    return cls(params, **c)


def target_tensor(y, loss):
    t = torch.from_numpy(y)
    if loss == "cross_entropy" and not np.issubdtype(y.dtype, np.floating):
        return t.long()
    return t


def make_scheduler(opt, schedule):
    if schedule is None:
        return None
    s = dict(schedule)
    kind = s.pop("type")
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s["step_size"], gamma=s["gamma"])
    if kind == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=s["gamma"])
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["t_max"], eta_min=s["eta_min"])
    if kind == "linear_warmup":
        return torch.optim.lr_scheduler.LinearLR(opt, start_factor=s["start_factor"], total_iters=s["warmup_epochs"])
    raise ValueError(kind)


def case(name, layers, x, y, loss, opt, *, dtype=torch.float64, batch_size=2, epochs=2, seed=0, setup=None,
         schedule=None, clip=None, input_shape=None, eval_mode=False):
    torch.manual_seed(seed)
    model = build(layers, dtype)
    if eval_mode:
        model.eval()
    if setup:
        setup(model)
    npdtype = np.float64 if dtype == torch.float64 else np.float32
    x = np.asarray(x, dtype=npdtype)
    if np.issubdtype(np.asarray(y).dtype, np.floating):
        y = np.asarray(y, dtype=npdtype)
    folder = ROOT / name
    folder.mkdir(parents=True)
    spec = {"layers": layers} if input_shape is None else {"input": input_shape, "layers": layers}
    (folder / "model.json").write_text(json.dumps(spec, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "params.safetensors"))
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    config = {"loss": loss, "optimizer": opt, "batch_size": batch_size, "epochs": epochs}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")

    def loss_of(xb, yb):
        pred = model(torch.from_numpy(xb))
        t = target_tensor(yb, loss)
        if loss != "cross_entropy" and t.dim() == 1:
            t = t.reshape(-1, 1)
        return LOSSES[loss](pred, t)

    # The gradient pass must not count as a training step: in training mode its
    # forward updates batch norm's running statistics, which are put back after it.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = loss_of(x, y)
    model.zero_grad()
    value.backward()
    model.load_state_dict(before)
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    save_file(grads, str(folder / "grads.safetensors"))
    (folder / "expected.json").write_text(json.dumps({"loss": value.item(), "dtype": str(dtype)}) + "\n")

    if eval_mode:
        # Gradients in evaluation mode (`grad --eval`); chainrule trains in training
        # mode only, so there is nothing to train against.
        (folder / "extra.json").write_text(json.dumps({"eval": True}) + "\n")
        return
    if schedule is not None or clip is not None:
        (folder / "extra.json").write_text(json.dumps({"schedule": schedule, "clip_grad_norm": clip}) + "\n")
    opt_ = optimizer(model.parameters(), opt)
    scheduler = make_scheduler(opt_, schedule)
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            opt_.zero_grad()
            loss_of(x[start:start + batch_size], y[start:start + batch_size]).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt_.step()
        if scheduler is not None:
            scheduler.step()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "trained.safetensors"))


def relu_at_zero(model):
    """Make the first hidden unit's pre-activation exactly 0 for the first sample."""
    with torch.no_grad():
        model[0].weight[0] = torch.tensor([1.0, 1.0, 0.5], dtype=model[0].weight.dtype)
        model[0].bias[0] = 0.0


def ones_kernel(model):
    """A 2x2 kernel of ones over an integer image: equal window sums from different
    patches, so a tied maximum's routing changes the kernel's gradient."""
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()


def random_running_statistics(model):
    """Running statistics other than the fresh 0 and 1, for evaluation mode."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)


def spatial_cases(dt, tag, rng):
    n = 5
    sgd = {"type": "sgd", "lr": 0.1, "momentum": 0.9}
    adam = {"type": "adam", "lr": 0.01}
    image = rng.uniform(-1, 1, size=(n, 2, 7, 7))
    classes = np.array([0, 2, 1, 2, 0], dtype=np.int64)
    case(f"{tag}_spatial_conv_stride_padding_maxpool", [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
        {"type": "linear", "in": 12, "out": 3}], image, classes, "cross_entropy", sgd, dtype=dt,
        input_shape=[2, 7, 7])
    tall = rng.uniform(-1, 1, size=(n, 1, 9, 8))
    case(f"{tag}_spatial_conv_dilation_avgpool", [
        {"type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 2], "stride": [1, 2],
         "padding": [2, 1], "dilation": [2, 1], "bias": False},
        {"type": "tanh"}, {"type": "avg_pool2d", "kernel_size": 3, "stride": 2, "padding": 1}, {"type": "flatten"},
        {"type": "linear", "in": 30, "out": 2}], tall, rng.uniform(-1, 1, size=(n, 2)), "mse", adam, dtype=dt,
        input_shape=[1, 9, 8])
    ties = rng.integers(0, 3, size=(n, 1, 5, 5)).astype(np.float64)
    case(f"{tag}_spatial_maxpool_tied", [
        {"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 2},
        {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"}, {"type": "linear", "in": 4, "out": 2}],
        ties, rng.uniform(-1, 1, size=(n, 2)), "mse", {"type": "sgd", "lr": 0.01}, dtype=dt, epochs=1,
        setup=ones_kernel, input_shape=[1, 5, 5])
    flat = rng.uniform(-1, 1, size=(n, 3))
    # batch 3 of 5 rows: the last batch of each epoch has 2 rows. A bias just before
    # batch norm gets a gradient of exactly 0 in theory and rounding noise in
    # practice, which momentum and Adam would turn into steps that compare only
    # noise: those layers have none (as is usual before batch norm).
    case(f"{tag}_spatial_batch_norm1d", [
        {"type": "linear", "in": 3, "out": 4, "bias": False}, {"type": "batch_norm1d", "num_features": 4},
        {"type": "relu"},
        {"type": "linear", "in": 4, "out": 2}], flat, rng.uniform(-1, 1, size=(n, 2)), "mse", sgd, dtype=dt,
        batch_size=3, epochs=3)
    case(f"{tag}_spatial_batch_norm1d_plain", [
        {"type": "linear", "in": 3, "out": 4, "bias": False},
        {"type": "batch_norm1d", "num_features": 4, "eps": 1e-3, "momentum": 0.3, "affine": False},
        {"type": "tanh"}, {"type": "linear", "in": 4, "out": 2}], flat, rng.uniform(-1, 1, size=(n, 2)), "mse",
        adam, dtype=dt, batch_size=3, epochs=3)
    small = rng.uniform(-1, 1, size=(n, 2, 4, 4))
    case(f"{tag}_spatial_batch_norm2d", [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "bias": False},
        {"type": "batch_norm2d", "num_features": 3, "momentum": 0.2}, {"type": "relu"},
        {"type": "avg_pool2d", "kernel_size": 2}, {"type": "flatten"}, {"type": "linear", "in": 12, "out": 3}],
        small, classes, "cross_entropy", sgd, dtype=dt, input_shape=[2, 4, 4])
    case(f"{tag}_spatial_layer_norm", [
        {"type": "linear", "in": 3, "out": 4}, {"type": "layer_norm", "normalized_shape": 4}, {"type": "gelu"},
        {"type": "linear", "in": 4, "out": 2}], flat, rng.uniform(-1, 1, size=(n, 2)), "mse", adam, dtype=dt)
    case(f"{tag}_spatial_layer_norm_image", [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"type": "layer_norm", "normalized_shape": [4, 4], "eps": 1e-4}, {"type": "silu"}, {"type": "flatten"},
        {"type": "linear", "in": 48, "out": 3}], small, classes, "cross_entropy", sgd, dtype=dt,
        input_shape=[2, 4, 4])
    # Evaluation mode: dropout is the identity, batch norm uses its running statistics.
    case(f"{tag}_spatial_eval_dropout_batch_norm", [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3},
        {"type": "batch_norm2d", "num_features": 3}, {"type": "relu"}, {"type": "dropout", "p": 0.25},
        {"type": "flatten"}, {"type": "linear", "in": 12, "out": 4}, {"type": "batch_norm1d", "num_features": 4},
        {"type": "dropout"}, {"type": "linear", "in": 4, "out": 3}], small, classes, "cross_entropy", sgd,
        dtype=dt, setup=random_running_statistics, input_shape=[2, 4, 4], eval_mode=True)


def main():
    if ROOT.exists():
        shutil.rmtree(ROOT)
    rng = np.random.default_rng(0)
    n = 5  # with batch_size 2, the last batch of every epoch has 1 row
    x = rng.uniform(-1, 1, size=(n, 3))
    x[0] = [0.5, -1.0, 1.0]  # with relu_at_zero: 0.5 - 1.0 + 0.5 = 0 exactly
    y_reg = rng.uniform(-1, 1, size=(n, 2))
    regression = [{"type": "linear", "in": 3, "out": 4}, {"type": "relu"}, {"type": "linear", "in": 4, "out": 2}]
    sgd = {"type": "sgd", "lr": 0.1, "momentum": 0.9}

    for dt, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
        for loss in ["mse", "sse", "half_sse", "mae", "huber"]:
            case(f"{tag}_loss_{loss}", regression, x, y_reg * 2.5, loss, sgd, dtype=dt, setup=relu_at_zero)
        case(f"{tag}_loss_bce", [{"type": "linear", "in": 3, "out": 4}, {"type": "tanh"},
             {"type": "linear", "in": 4, "out": 1}, {"type": "sigmoid"}],
             x, rng.uniform(0, 1, size=n), "bce", sgd, dtype=dt)
        case(f"{tag}_loss_bce_logits", [{"type": "linear", "in": 3, "out": 4}, {"type": "leaky_relu", "slope": 0.2},
             {"type": "linear", "in": 4, "out": 2}], x, rng.uniform(0, 1, size=(n, 2)), "bce_logits", sgd,
             dtype=dt, setup=relu_at_zero)
        classifier = [{"type": "linear", "in": 3, "out": 5}, {"type": "sigmoid"}, {"type": "linear", "in": 5, "out": 4}]
        case(f"{tag}_loss_cross_entropy_indices", classifier, x, np.array([0, 3, 1, 2, 3], dtype=np.int64),
             "cross_entropy", sgd, dtype=dt)
        case(f"{tag}_loss_cross_entropy_int32", classifier, x, np.array([1, 1, 0, 2, 3], dtype=np.int32),
             "cross_entropy", sgd, dtype=dt)
        probs = rng.uniform(0, 1, size=(n, 4))
        case(f"{tag}_loss_cross_entropy_probabilities", classifier, x, probs / probs.sum(1, keepdims=True),
             "cross_entropy", sgd, dtype=dt)
        case(f"{tag}_layers_softmax_identity_nobias", [{"type": "linear", "in": 3, "out": 4, "bias": False},
             {"type": "softmax"}, {"type": "identity"}, {"type": "linear", "in": 4, "out": 2}],
             x, y_reg, "mse", sgd, dtype=dt)

        optimizers = {
            "sgd_plain": {"type": "sgd", "lr": 0.1},
            "sgd_momentum_dampening_wd": {"type": "sgd", "lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
            "sgd_nesterov": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
            "adam": {"type": "adam", "lr": 0.01},
            "adam_amsgrad_wd": {"type": "adam", "lr": 0.01, "betas": [0.8, 0.9], "eps": 1e-6, "weight_decay": 0.05, "amsgrad": True},
            "adamw": {"type": "adamw", "lr": 0.01},
            "adamw_amsgrad": {"type": "adamw", "lr": 0.02, "weight_decay": 0.1, "amsgrad": True},
            "rmsprop": {"type": "rmsprop", "lr": 0.01},
            "rmsprop_centered_momentum_wd": {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.02},
            "adagrad": {"type": "adagrad", "lr": 0.1},
            "adagrad_decay_wd_init": {"type": "adagrad", "lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.02, "initial_accumulator_value": 0.1, "eps": 1e-8},
            # Revision 2's optimizer. Optimizer cases draw nothing from `rng` and each
            # case seeds torch itself, so adding these left every other case as it was.
            "adadelta": {"type": "adadelta"},
            "adadelta_rho_eps_wd": {"type": "adadelta", "lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.05},
        }
        for name, opt in optimizers.items():
            case(f"{tag}_optim_{name}", regression, x, y_reg, "mse", opt, dtype=dt, epochs=3, setup=relu_at_zero)

        schedules = {
            "step": {"type": "step", "step_size": 2, "gamma": 0.5},
            "exponential": {"type": "exponential", "gamma": 0.8},
            "cosine": {"type": "cosine", "t_max": 3, "eta_min": 0.001},
            "linear_warmup": {"type": "linear_warmup", "start_factor": 0.25, "warmup_epochs": 3},
        }
        for name, schedule in schedules.items():
            case(f"{tag}_schedule_{name}", regression, x, y_reg, "mse", {"type": "sgd", "lr": 0.1, "momentum": 0.5},
                 dtype=dt, epochs=5, schedule=schedule)
        # The PyTorch MNIST example's optimizer: Adadelta at lr 1.0, StepLR(step_size=1, gamma=0.7).
        case(f"{tag}_schedule_step_adadelta", regression, x, y_reg, "mse", {"type": "adadelta", "lr": 1.0},
             dtype=dt, epochs=5, schedule={"type": "step", "step_size": 1, "gamma": 0.7})
        # Clipping that binds (large gradients from sse on scaled targets) and one that does not.
        case(f"{tag}_clip_binding", regression, x, y_reg * 10, "sse", {"type": "adam", "lr": 0.05}, dtype=dt,
             epochs=3, clip=0.5)
        case(f"{tag}_clip_loose", regression, x, y_reg, "mse", {"type": "sgd", "lr": 0.1}, dtype=dt, epochs=3,
             clip=1e3)

    # The activations of revision 2, each with its defaults and with its keys set;
    # relu_at_zero puts a pre-activation at exactly 0 (elu's derivative is alpha
    # there), and softplus with beta 2, threshold 1 has inputs on its linear side.
    activations = {
        "gelu": {"type": "gelu"},
        "gelu_tanh": {"type": "gelu", "approximate": "tanh"},
        "silu": {"type": "silu"},
        "elu": {"type": "elu"},
        "elu_alpha": {"type": "elu", "alpha": 0.7},
        "softplus": {"type": "softplus"},
        "softplus_beta_threshold": {"type": "softplus", "beta": 2.0, "threshold": 1.0},
    }
    # After every other case, so that their random initialisations stay as they were.
    for (dt, tag), (name, activation) in itertools.product([(torch.float64, "f64"), (torch.float32, "f32")], activations.items()):
        layers = [{"type": "linear", "in": 3, "out": 4}, activation, {"type": "linear", "in": 4, "out": 2}]
        case(f"{tag}_activation_{name}", layers, x * 2, y_reg, "mse", sgd, dtype=dt, setup=relu_at_zero)

    # The layers of revision 2 (after every other case, for the same reason).
    for dt, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
        spatial_cases(dt, tag, np.random.default_rng(2))

    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    print(f"wrote {len(list(ROOT.iterdir()))} cases, {total / 1024:.0f} KiB, to {ROOT}")


if __name__ == "__main__":
    main()
