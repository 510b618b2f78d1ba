"""PyTorch modules to and from chainrule's model JSON (spec/interchange.md).

Only conversion lives here: each supported ``torch.nn`` module becomes the layer of
the interchange contract that equals it, with the same ``state_dict()`` names, and back.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UnsupportedLayerError

SUPPORTED = (
    "Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax(dim=-1), Identity, GELU, SiLU, ELU, "
    "Softplus, Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout, BatchNorm1d, BatchNorm2d, "
    "LayerNorm"
)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("this needs PyTorch: pip install torch") from e
    return torch


def _pair(v: Any) -> Any:
    """An int, or [h, w] when the two differ."""
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and v[0] == v[1]:
            return int(v[0])
        return [int(a) for a in v]
    return int(v)


def _unsupported(i: int, m: Any, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"layer {i} ({type(m).__name__}): {why}")


def layer_of(i: int, m: Any) -> Dict[str, Any]:
    """The contract's layer for module ``m`` at position ``i``."""
    nn = _torch().nn
    # Subclasses are taken as their base (a user's module that only changes how
    # PyTorch computes it, say its backward, is still that layer for chainrule:
    # gradcheck then shows where the two disagree).
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
    if isinstance(m, nn.LeakyReLU):
        return {"type": "leaky_relu", "slope": float(m.negative_slope)}
    if isinstance(m, nn.ReLU):
        return {"type": "relu"}
    if isinstance(m, nn.Sigmoid):
        return {"type": "sigmoid"}
    if isinstance(m, nn.Tanh):
        return {"type": "tanh"}
    if isinstance(m, nn.Softmax):
        if m.dim not in (-1,):
            raise _unsupported(i, m, f"dim={m.dim}: chainrule's softmax is over the last axis (use dim=-1)")
        return {"type": "softmax"}
    if isinstance(m, nn.Identity):
        return {"type": "identity"}
    if isinstance(m, nn.GELU):
        return {"type": "gelu", "approximate": m.approximate}
    if isinstance(m, nn.SiLU):
        return {"type": "silu"}
    if isinstance(m, nn.ELU):
        return {"type": "elu", "alpha": float(m.alpha)}
    if isinstance(m, nn.Softplus):
        return {"type": "softplus", "beta": float(m.beta), "threshold": float(m.threshold)}
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise _unsupported(i, m, f"groups={m.groups}: only groups=1 is supported")
        if m.padding_mode != "zeros":
            raise _unsupported(i, m, f"padding_mode={m.padding_mode!r}: only zeros")
        if isinstance(m.padding, str):
            raise _unsupported(i, m, f"padding={m.padding!r}: give the padding as numbers")
        return {
            "type": "conv2d",
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": _pair(m.kernel_size),
            "stride": _pair(m.stride),
            "padding": _pair(m.padding),
            "dilation": _pair(m.dilation),
            "bias": m.bias is not None,
        }
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        if m.ceil_mode:
            raise _unsupported(i, m, "ceil_mode=True is not supported")
        if isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != 1 or m.return_indices:
                raise _unsupported(i, m, "only dilation=1 and return_indices=False are supported")
            kind = "max_pool2d"
        else:
            if not m.count_include_pad or m.divisor_override is not None:
                raise _unsupported(i, m, "only count_include_pad=True and no divisor_override are supported")
            kind = "avg_pool2d"
        return {
            "type": kind,
            "kernel_size": _pair(m.kernel_size),
            "stride": _pair(m.stride if m.stride is not None else m.kernel_size),
            "padding": _pair(m.padding),
        }
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise _unsupported(i, m, "only Flatten(start_dim=1, end_dim=-1) is supported")
        return {"type": "flatten"}
    if isinstance(m, nn.Dropout):
        return {"type": "dropout", "p": float(m.p)}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not m.track_running_stats or m.momentum is None:
            raise _unsupported(i, m, "only track_running_stats=True with a momentum is supported")
        return {
            "type": "batch_norm1d" if isinstance(m, nn.BatchNorm1d) else "batch_norm2d",
            "num_features": m.num_features,
            "eps": float(m.eps),
            "momentum": float(m.momentum),
            "affine": bool(m.affine),
        }
    if isinstance(m, nn.LayerNorm):
        if m.elementwise_affine and m.bias is None:
            raise _unsupported(i, m, "bias=False is not supported")
        return {
            "type": "layer_norm",
            "normalized_shape": [int(d) for d in m.normalized_shape],
            "eps": float(m.eps),
            "elementwise_affine": bool(m.elementwise_affine),
        }
    raise _unsupported(i, m, f"chainrule has no layer for this module (supported: {SUPPORTED})")


def describe(module: Any) -> Tuple[List[Dict[str, Any]], Dict[str, np.ndarray], str, bool]:
    """(layers, state dict as arrays, dtype, training) of an ``nn.Sequential``."""
    torch = _torch()
    if not isinstance(module, torch.nn.Sequential):
        raise UnsupportedLayerError(
            f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}"
        )
    layers = [layer_of(i, m) for i, m in enumerate(module)]
    state = module.state_dict()
    dtypes = {t.dtype for k, t in state.items() if not k.endswith("num_batches_tracked")}
    if dtypes - {torch.float32, torch.float64}:
        raise UnsupportedLayerError(
            f"from_torch: parameters of dtype {sorted(map(str, dtypes))}: chainrule computes in float32 or float64"
        )
    dtype = "float64" if torch.float64 in dtypes else "float32"
    arrays = {k: t.detach().cpu().numpy() for k, t in state.items()}
    return layers, arrays, dtype, bool(module.training)


def build(layers: Sequence[Dict[str, Any]], state: Dict[str, np.ndarray], dtype: str, training: bool):
    """An ``nn.Sequential`` from the contract's layers and a state dict of arrays."""
    torch = _torch()
    nn = torch.nn
    modules = []
    for spec in layers:
        t = spec["type"]
        if t == "linear":
            m = nn.Linear(spec["in"], spec["out"], bias=spec.get("bias", True))
        elif t == "relu":
            m = nn.ReLU()
        elif t == "leaky_relu":
            m = nn.LeakyReLU(spec.get("slope", 0.01))
        elif t == "sigmoid":
            m = nn.Sigmoid()
        elif t == "tanh":
            m = nn.Tanh()
        elif t == "softmax":
            m = nn.Softmax(dim=-1)
        elif t == "identity":
            m = nn.Identity()
        elif t == "gelu":
            m = nn.GELU(approximate=spec.get("approximate", "none"))
        elif t == "silu":
            m = nn.SiLU()
        elif t == "elu":
            m = nn.ELU(alpha=spec.get("alpha", 1.0))
        elif t == "softplus":
            m = nn.Softplus(beta=spec.get("beta", 1.0), threshold=spec.get("threshold", 20.0))
        elif t == "conv2d":
            m = nn.Conv2d(
                spec["in_channels"], spec["out_channels"], _tuple(spec["kernel_size"]),
                stride=_tuple(spec.get("stride", 1)), padding=_tuple(spec.get("padding", 0)),
                dilation=_tuple(spec.get("dilation", 1)), bias=spec.get("bias", True),
            )
        elif t == "max_pool2d":
            m = nn.MaxPool2d(_tuple(spec["kernel_size"]), stride=_tuple(spec.get("stride", spec["kernel_size"])), padding=_tuple(spec.get("padding", 0)))
        elif t == "avg_pool2d":
            m = nn.AvgPool2d(_tuple(spec["kernel_size"]), stride=_tuple(spec.get("stride", spec["kernel_size"])), padding=_tuple(spec.get("padding", 0)))
        elif t == "flatten":
            m = nn.Flatten()
        elif t == "dropout":
            m = nn.Dropout(spec.get("p", 0.5))
        elif t in ("batch_norm1d", "batch_norm2d"):
            cls = nn.BatchNorm1d if t == "batch_norm1d" else nn.BatchNorm2d
            m = cls(spec["num_features"], eps=spec.get("eps", 1e-5), momentum=spec.get("momentum", 0.1), affine=spec.get("affine", True))
        elif t == "layer_norm":
            m = nn.LayerNorm(spec["normalized_shape"], eps=spec.get("eps", 1e-5), elementwise_affine=spec.get("elementwise_affine", True))
        else:  # pragma: no cover - the library only writes the types above
            raise UnsupportedLayerError(f"to_torch: layer type {t!r} has no PyTorch module here")
        modules.append(m)
    seq = nn.Sequential(*modules)
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    seq = seq.to(torch_dtype)
    tensors = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            tensors[k] = torch.tensor(int(np.asarray(v).reshape(())), dtype=torch.int64)
        else:
            tensors[k] = torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype)
    seq.load_state_dict(tensors)
    seq.train(training)
    return seq


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def torch_loss(name: str):
    """The PyTorch loss a contract loss name stands for (spec/interchange.md, Losses)."""
    torch = _torch()
    nn = torch.nn
    table = {
        "mse": nn.MSELoss(),
        "sse": nn.MSELoss(reduction="sum"),
        "mae": nn.L1Loss(),
        "huber": nn.HuberLoss(delta=1.0),
        "bce": nn.BCELoss(),
        "bce_logits": nn.BCEWithLogitsLoss(),
        "cross_entropy": nn.CrossEntropyLoss(),
    }
    if name == "half_sse":
        sse = nn.MSELoss(reduction="sum")
        return lambda p, y: 0.5 * sse(p, y)
    if name not in table:
        from .errors import InvalidValueError

        raise InvalidValueError(
            f"loss: unknown loss {name!r} (expected one of mse, sse, half_sse, mae, huber, bce, bce_logits, cross_entropy)"
        )
    return table[name]


def torch_target(y: np.ndarray, loss: str, prediction_shape: Sequence[int]):
    """Targets as PyTorch's loss for ``loss`` takes them."""
    torch = _torch()
    if loss == "cross_entropy" and y.dtype.kind in "iu":
        return torch.from_numpy(y.astype(np.int64))
    t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
    if t.dim() == 1 and len(prediction_shape) == 2 and prediction_shape[1] == 1:
        t = t.reshape(-1, 1)
    return t
