"""``chainrule.Sequential``: a layer stack with PyTorch's names, trained and
differentiated by the Rust library."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _chainrule, _torch
from .errors import InvalidValueError

ArrayLike = Any

_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")


def as_array(a: ArrayLike, name: str) -> np.ndarray:
    """A NumPy array from an array, a list or a torch tensor (no copy for arrays, nor
    for CPU torch tensors). An array whose memory is not aligned for its dtype (a view
    of a byte buffer at an odd offset, say) is copied: the native module reads arrays
    as Rust slices, which must be aligned."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise InvalidValueError(f"{name}: not an array of numbers")
    if not arr.flags.aligned:
        arr = arr.copy()
    return arr


def as_inputs(a: ArrayLike, name: str, dtype: str) -> np.ndarray:
    """Inputs: arrays of floats and integers pass as they are (the native module reads
    them into its tensor in one pass, converting as it goes); bools become ``dtype``."""
    arr = as_array(a, name)
    if arr.dtype.kind == "b":
        arr = arr.astype(dtype)
    return arr


def as_targets(a: ArrayLike, name: str) -> np.ndarray:
    """Targets: floats, or integer class indices, pass as they are; bools become
    int64."""
    arr = as_array(a, name)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    return arr


class History(list):
    """The per-epoch record of :meth:`Sequential.fit`: a list of dicts with ``epoch``
    (from 0), ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` and
    ``seconds``; ``history["loss"]`` gives one column."""

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return [row[key] for row in self]
        return super().__getitem__(key)


class _Progress:
    """A one-line progress bar written with carriage returns: a terminal and Jupyter's
    output area both redraw it in place. Redrawn at most ten times a second."""

    def __init__(self, epochs: int, stream=None):
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.last = 0.0

    def __call__(self, kind: str, data: Any) -> None:
        if kind == "step":
            epoch, batch, batches, loss = data
            now = time.monotonic()
            if batch + 1 < batches and now - self.last < 0.1:
                return
            self.last = now
            done = int(20 * (batch + 1) / batches)
            self.stream.write(
                f"\repoch {epoch + 1}/{self.epochs} [{'#' * done}{'.' * (20 - done)}] "
                f"{batch + 1}/{batches} loss {loss:.6g}"
            )
        else:
            parts = [f"epoch {data['epoch'] + 1}/{self.epochs}", f"loss {data['loss']:.6g}"]
            if data.get("accuracy") is not None:
                parts.append(f"accuracy {data['accuracy']:.4f}")
            if data.get("val_loss") is not None:
                parts.append(f"val_loss {data['val_loss']:.6g}")
            if data.get("val_accuracy") is not None:
                parts.append(f"val_accuracy {data['val_accuracy']:.4f}")
            parts.append(f"{data['seconds']:.2f}s")
            self.stream.write("\r" + "  ".join(parts) + " " * 20 + "\n")
        self.stream.flush()


class Sequential:
    """Layers applied in order, with the names of the equivalent ``torch.nn.Sequential``
    (``"0.weight"``, ``"0.bias"``, …; activations count as layers).

    Build one from the interchange contract's layer list, from a PyTorch module
    (:meth:`from_torch`), or from files (:func:`chainrule.load`)::

        >>> import chainrule, numpy as np
        >>> m = chainrule.Sequential([{"type": "linear", "in": 2, "out": 1}], dtype="float64")
        >>> m.predict(np.zeros((3, 2))).shape
        (3, 1)
    """

    def __init__(
        self,
        layers: Sequence[Mapping[str, Any]],
        *,
        input: Optional[Sequence[int]] = None,
        params: Optional[Mapping[str, ArrayLike]] = None,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        spec: Dict[str, Any] = {"layers": [dict(layer) for layer in layers]}
        if input is not None:
            spec["input"] = [int(d) for d in input]
        tensors = None
        if params is not None:
            tensors = {k: as_inputs(v, k, dtype) for k, v in params.items()}
        self._m = _chainrule.Model.from_json(json.dumps(spec), tensors, dtype, seed)

    @classmethod
    def _wrap(cls, native: "_chainrule.Model") -> "Sequential":
        self = cls.__new__(cls)
        self._m = native
        return self

    # --- PyTorch ---------------------------------------------------------------------

    @classmethod
    def from_torch(
        cls,
        module: Any,
        *,
        input: Optional[Sequence[int]] = None,
        dtype: Optional[str] = None,
    ) -> "Sequential":
        """The chainrule model equal to ``module``, an ``nn.Sequential`` of supported
        layers, with its weights and buffers and its train/eval mode.

        ``input`` is one sample's shape (``(1, 28, 28)``), needed when a Conv2d, a
        pooling layer or Flatten comes before the first Linear. ``dtype`` defaults to
        the module's (float32 or float64).

        Raises :class:`chainrule.UnsupportedLayerError` naming the first module that
        has no chainrule layer.
        """
        layers, state, module_dtype, training = _torch.describe(module)
        dtype = dtype or module_dtype
        m = cls(layers, input=input, params=state, dtype=dtype)
        m._m.set_training(training)
        return m

    def to_torch(self) -> Any:
        """The equivalent ``torch.nn.Sequential``, with these weights, buffers and mode."""
        spec = json.loads(self._m.to_json())
        return _torch.build(spec["layers"], self.state_dict(), self.dtype, self.training)

    # --- what it is --------------------------------------------------------------------

    @property
    def layers(self) -> List[Dict[str, Any]]:
        """The layers as the model JSON writes them (defaults written out)."""
        return json.loads(self._m.to_json())["layers"]

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"float64"``: the dtype everything is computed in."""
        return self._m.dtype

    @property
    def training(self) -> bool:
        """Whether the model is in training mode (batch statistics, dropout)."""
        return self._m.training

    def train(self, mode: bool = True) -> "Sequential":
        """Training mode (as ``nn.Module.train``); returns the model."""
        self._m.set_training(mode)
        return self

    def eval(self) -> "Sequential":
        """Evaluation mode (as ``nn.Module.eval``); returns the model."""
        return self.train(False)

    def astype(self, dtype: str) -> "Sequential":
        """A copy in ``dtype`` (``"float32"`` or ``"float64"``)."""
        return Sequential._wrap(self._m.astype(dtype))

    def to_json(self) -> str:
        """The model JSON of the interchange contract."""
        return self._m.to_json()

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Parameters and buffers by PyTorch name, as arrays: copies (one each), so that
        writing to them leaves the model as it is (unlike PyTorch's, which alias the
        parameters)."""
        return dict(self._m.state_dict())

    def param_names(self) -> List[str]:
        """The trainable parameters' names, in order."""
        return list(self._m.param_names())

    def __repr__(self) -> str:
        inner = ",\n  ".join(json.dumps(layer) for layer in self.layers)
        return f"chainrule.Sequential(dtype={self.dtype!r}, layers=[\n  {inner}\n])"

    # --- computing -----------------------------------------------------------------------

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The outputs for ``x`` (``[N, ...]``), in evaluation mode (the model's own
        mode is kept), of the model's dtype, a thousand rows at a time. A C-contiguous
        ``x`` of the model's dtype is read in place (each pass copies its thousand rows),
        any other is converted once; the result is the library's own buffer, handed to
        NumPy without a copy (its ``base`` is the Rust allocation). Runs without the
        GIL: other Python threads run meanwhile."""
        return self._m.predict(as_inputs(x, "x", self.dtype))

    __call__ = predict

    def evaluate(self, x: ArrayLike, y: ArrayLike, loss: str) -> Dict[str, Optional[float]]:
        """``{"loss": ..., "accuracy": ...}`` over (x, y) in evaluation mode; accuracy
        is None unless the loss classifies (cross_entropy, bce, bce_logits). ``x`` is
        read as :meth:`predict` reads it; runs without the GIL."""
        return dict(self._m.evaluate(as_inputs(x, "x", self.dtype), as_targets(y, "y"), loss))

    def grad(self, x: ArrayLike, y: ArrayLike, loss: str, *, seed: int = 0) -> Dict[str, np.ndarray]:
        """∂loss/∂θ for every parameter θ, by PyTorch name, with all of (x, y) as one
        batch (``chainrule grad``), as arrays of the model's dtype handed to NumPy
        without a copy. In training mode dropout draws its masks from
        ``seed``. Loss names: mse, sse, half_sse, mae, huber, bce, bce_logits,
        cross_entropy (spec/interchange.md). A C-contiguous ``x`` of the model's dtype
        is not converted: its rows are copied once, as the one batch; any other is
        converted once, into that batch. Runs without the GIL."""
        return self.value_and_grad(x, y, loss, seed=seed)[1]

    def value_and_grad(
        self, x: ArrayLike, y: ArrayLike, loss: str, *, seed: int = 0
    ) -> Tuple[float, Dict[str, np.ndarray]]:
        """(loss, gradients) as :meth:`grad`."""
        value, grads = self._m.grad(as_inputs(x, "x", self.dtype), as_targets(y, "y"), loss, seed)
        return value, dict(grads)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        loss: str,
        optimizer: Union[str, Mapping[str, Any]] = "sgd",
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        validation: Optional[Tuple[ArrayLike, ArrayLike]] = None,
        progress: bool = True,
        callback: Optional[Any] = None,
        **optimizer_options: Any,
    ) -> History:
        """Trains in mini-batches and returns the per-epoch :class:`History`.

        ``optimizer`` is a name (sgd, adam, adamw, rmsprop, adagrad, adadelta) or a
        dict as in the training config (``{"type": "sgd", "lr": 0.1, "momentum":
        0.9}``); extra keyword arguments (``lr=0.1``) are its fields. Omitted fields
        take ``torch.optim``'s defaults. Without shuffling the batches are
        consecutive rows (PyTorch ``DataLoader(shuffle=False)``).

        ``progress`` draws a one-line bar (plain text with carriage returns: it
        redraws in place in a terminal and in Jupyter; no tqdm needed) and one line per
        epoch. ``callback(kind, data)`` is called with ``("step", (epoch, batch,
        batches, loss))`` after every step and ``("epoch", metrics)`` after every epoch.

        Training runs without the GIL: other Python threads run meanwhile. It takes
        the GIL back between steps only to call ``callback`` and draw the bar (without
        a callback, after a step at most ten times a second, and after every epoch) and
        to check for Ctrl-C: Ctrl-C (or "Interrupt the kernel" in Jupyter) stops after
        the current step and raises ``KeyboardInterrupt``; the steps taken are kept.

        A C-contiguous ``x`` (and validation x) of the model's dtype is read in place,
        lent to the library for the call: no copy of it is made, each batch copies its
        own rows (writing to it from another thread meanwhile gives undefined numbers,
        as with NumPy's own functions that release the GIL). Other layouts and dtypes,
        integer ones included, are converted once, in one pass. ``y`` is read once
        into the library's targets.
        """
        if isinstance(optimizer, str):
            opt: Dict[str, Any] = {"type": optimizer}
        elif isinstance(optimizer, Mapping):
            opt = dict(optimizer)
        else:
            raise InvalidValueError(
                f"optimizer: expected a name ({', '.join(_OPTIMIZERS)}) or a dict, got {type(optimizer).__name__}"
            )
        for k, v in optimizer_options.items():
            opt[k] = list(v) if isinstance(v, tuple) else v
        config = json.dumps(
            {
                "loss": loss,
                "optimizer": opt,
                "batch_size": batch_size,
                "epochs": epochs,
                "shuffle": shuffle,
                "seed": seed,
            }
        )
        bar = _Progress(epochs) if progress else None

        def on_event(kind: str, data: Any) -> None:
            if bar is not None:
                bar(kind, data)
            if callback is not None:
                callback(kind, data)

        vx = vy = None
        if validation is not None:
            vx = as_inputs(validation[0], "validation x", self.dtype)
            vy = as_targets(validation[1], "validation y")
        # Without a callback only the bar listens, and it redraws ten times a second at
        # most: training then takes the GIL back after a step only now and then.
        rows = self._m.fit(
            as_inputs(x, "x", self.dtype),
            as_targets(y, "y"),
            config,
            vx,
            vy,
            on_event if (bar is not None or callback is not None) else None,
            every_step=callback is not None,
        )
        return History(rows)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes ``model.json`` and ``params.safetensors`` into the folder ``path``
        (created if missing): a run folder :func:`chainrule.load` and PyTorch's
        ``safetensors.torch.load_file`` read back."""
        os.makedirs(path, exist_ok=True)
        self._m.save(os.fspath(path))


def load(
    path: Union[str, "os.PathLike[str]"], params: Union[str, "os.PathLike[str]", None] = None
) -> Sequential:
    """Reads a run folder (``model.json`` + ``params.safetensors``) or a model.json
    (with ``params``, or the params.safetensors beside it), in the parameters' dtype.

    Raises :class:`chainrule.FileNotFoundError` (also a ``FileNotFoundError``) when a
    file is missing, :class:`chainrule.FormatError` or
    :class:`chainrule.InvalidValueError` naming the file and field at fault.
    """
    return Sequential._wrap(
        _chainrule.Model.load(os.fspath(path), None if params is None else os.fspath(params))
    )
