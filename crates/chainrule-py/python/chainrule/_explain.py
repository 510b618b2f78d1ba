"""Explanations for Jupyter: derivations, graph drawings, closed forms and gradient
checks. The library computes and renders them; these classes only hold the results
and tell Jupyter how to display them."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _chainrule, _torch
from ._model import ArrayLike, Sequential, as_array, as_inputs, as_targets
from .errors import InvalidValueError


class Formula:
    """A network written as named scalar formulas (the format of
    ``examples/notebooks/003/network.formula``): for networks a layer stack cannot
    express, such as one bias shared by every neuron::

        >>> f = chainrule.Formula("input x = 0.5\\nparam w = 2\\nloss L = (w*x - 1)^2")
        >>> f.explain("w", lr=0.1).gradient
        0.0
    """

    def __init__(self, text: str) -> None:
        self.text = text
        # Parsed now, so that a mistake is reported where the formula is written.
        _chainrule.formula_params(text)

    @classmethod
    def read(cls, path: str) -> "Formula":
        """The formula in the file ``path``."""
        with open(path, encoding="utf-8") as f:
            return cls(f.read())

    def explain(self, param: Optional[str] = None, lr: float = 0.01) -> "Explanation":
        """The derivation of ∂L/∂``param`` as a sum over the paths from it to the loss
        (every parameter's when None), and the update at ``lr``."""
        summary, rendered = _chainrule.explain_formula(self.text, param, lr)
        return Explanation(rendered, forward=json.loads(summary)["forward"])

    def forward(self) -> Dict[str, float]:
        """Every named quantity's value (inputs, parameters, intermediates, loss)."""
        summary, _ = _chainrule.explain_formula(self.text, None, 0.0)
        return json.loads(summary)["forward"]

    def params(self) -> Dict[str, float]:
        """The parameters' values, in order."""
        return dict(_chainrule.formula_params(self.text))

    def gradient(self) -> Dict[str, float]:
        """Autodiff's ∂L/∂θ for every parameter θ."""
        return dict(_chainrule.formula_gradient(self.text))

    def with_params(self, values: Dict[str, float]) -> "Formula":
        """The same network with some parameters set to new values (their ``param``
        lines rewritten; the values written in shortest round-trip form)."""
        text = self.text
        for name, value in values.items():
            pattern = re.compile(rf"^(\s*param\s+{re.escape(name)}\s*=\s*)[^#\n]*", re.M)
            text, n = pattern.subn(lambda m: m.group(1) + repr(float(value)), text)
            if n != 1:
                raise InvalidValueError(f"param: {name!r} is not a parameter of this formula")
        return Formula(text)

    def graph(self) -> "Graph":
        """The computation graph of the loss."""
        return Graph(*_chainrule.graph_formula(self.text))

    def symbolic(self, symbolic_inputs: bool = False) -> "Symbolic":
        """The output and loss as sympy expressions of the parameters."""
        return Symbolic(json.loads(_chainrule.symbolic_formula(self.text, symbolic_inputs)))


def _model(model: Any) -> Sequential:
    """A chainrule model from a chainrule model or a torch ``nn.Sequential``."""
    if isinstance(model, Sequential):
        return model
    return Sequential.from_torch(model, dtype="float64")


def _data(model: Sequential, x: ArrayLike, y: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    return as_inputs(x, "x", "float64"), as_targets(y, "y")


class Explanation:
    """Chain-rule derivations with their numbers.

    Jupyter shows it typeset (``_repr_markdown_``); ``str()`` is the Unicode text of
    the terminal. The data is in :attr:`derivations` (one dict per parameter element,
    the library's JSON) and, for a single element, :attr:`factors`,
    :attr:`gradient`, :attr:`autodiff` and :attr:`update`.
    """

    def __init__(self, rendered: Sequence[Tuple[str, str, str, bool]], forward: Optional[Dict[str, float]] = None):
        self._text = [r[0] for r in rendered]
        self._markdown = [r[1] for r in rendered]
        #: One dict per derivation (the library's JSON).
        self.derivations: List[Dict[str, Any]] = [json.loads(r[2]) for r in rendered]
        #: Whether each derivation's chain equals autodiff's gradient.
        self.verified: bool = all(r[3] for r in rendered)
        #: A formula network's forward values (None for a layer stack).
        self.forward = forward

    def _one(self) -> Dict[str, Any]:
        if len(self.derivations) != 1:
            raise InvalidValueError(
                f"param: this explanation holds {len(self.derivations)} derivations; "
                "index it (explanation[i]) or pass param= for one"
            )
        return self.derivations[0]

    def __len__(self) -> int:
        return len(self.derivations)

    def __getitem__(self, i: int) -> "Explanation":
        return Explanation([(self._text[i], self._markdown[i], json.dumps(self.derivations[i]), True)])

    @property
    def param(self) -> str:
        """The parameter element, e.g. ``"0.weight[1,0]"``."""
        return self._one()["param"]

    @property
    def gradient(self) -> float:
        """The chain's value of ∂C/∂θ."""
        return self._one()["gradient"]

    @property
    def autodiff(self) -> float:
        """Autodiff's value of ∂C/∂θ (the chain's must equal it)."""
        return self._one()["autodiff"]

    @property
    def update(self) -> Dict[str, float]:
        """``{"lr", "old", "new"}``: one gradient-descent step of θ."""
        return self._one()["update"]

    @property
    def factors(self) -> List[List[Dict[str, Any]]]:
        """The chain's factors, one list per sample (layer stack: ``samples[n].factors``),
        per path (formula network: ``paths[k].factors``) or per term (tensor layers:
        ``terms``), each factor a dict with at least ``value``."""
        d = self._one()
        if "samples" in d:
            return [s["factors"] for s in d["samples"]]
        if "paths" in d:
            return [p["factors"] for p in d["paths"]]
        return [t.get("factors", []) for t in d.get("terms", d.get("shown", []))]

    def __str__(self) -> str:
        return "\n".join(self._text)

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        return "\n".join(self._markdown)

    def _repr_latex_(self) -> str:
        """The display-math blocks of the markdown, for frontends that render LaTeX only."""
        blocks = re.findall(r"\$\$(.+?)\$\$", self._repr_markdown_(), flags=re.S)
        return "\n".join(f"$${b.strip()}$$" for b in blocks)


def explain(
    model: Any,
    x: ArrayLike = None,
    y: ArrayLike = None,
    loss: Optional[str] = None,
    param: Optional[str] = None,
    lr: float = 0.01,
) -> Explanation:
    """The chain-rule derivation of ∂C/∂``param`` with every number in it, checked
    against autodiff, and the gradient-descent update at ``lr``.

    ``model`` is a :class:`Sequential`, a torch ``nn.Sequential`` (converted with
    :meth:`Sequential.from_torch`, computed in float64) or a :class:`Formula` (then x,
    y and loss are not used). ``param`` is an element in PyTorch's names:
    ``"0.weight[1,0]"`` (row, column) or ``"2.bias[0]"``; None explains every element
    of a layer stack (each tensor's largest gradient for convolutional networks).
    At most 64 samples (each sample's chain is written out).
    """
    if isinstance(model, Formula):
        return model.explain(param, lr)
    if x is None or y is None or loss is None:
        raise InvalidValueError("explain: x, y and loss are needed for a layer stack")
    m = _model(model)
    xs, ys = _data(m, x, y)
    return Explanation(_chainrule.explain(m._m, xs, ys, loss, param, lr))


class Graph:
    """The computation graph of a loss, each node with its value and gradient.
    Jupyter draws it inline (``_repr_svg_``); :attr:`dot` is Graphviz DOT."""

    def __init__(self, svg: str, dot: str) -> None:
        #: The drawing (SVG text).
        self.svg = svg
        #: The same graph in Graphviz's DOT.
        self.dot = dot

    def _repr_svg_(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return self.dot

    def save(self, path: str) -> None:
        """Writes the SVG (or the DOT, for a path ending in .dot)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.dot if str(path).endswith(".dot") else self.svg)


def graph(model: Any, x: ArrayLike = None, y: ArrayLike = None, loss: Optional[str] = None) -> Graph:
    """The computation graph of ``loss`` on (x, y) as training records it (micrograd's
    ``draw_dot``), for a :class:`Sequential`, a torch ``nn.Sequential`` or a
    :class:`Formula`."""
    if isinstance(model, Formula):
        return model.graph()
    if x is None or y is None or loss is None:
        raise InvalidValueError("graph: x, y and loss are needed for a layer stack")
    m = _model(model)
    xs, ys = _data(m, x, y)
    return Graph(*_chainrule.graph(m._m, xs, ys, loss))


class Symbolic:
    """A network written out as sympy expressions (``sympy.parse_expr`` of the
    library's sympy text).

    :attr:`loss` and :attr:`outputs` are expressions of the parameter symbols
    (``w1_2_1`` is the first linear layer's weight [1, 0], ``b1_2`` its bias [1]);
    :attr:`derivatives` maps each symbol to ∂C/∂symbol; :attr:`values` holds the
    parameters' (and symbolic inputs') values, :attr:`autodiff` autodiff's
    gradients, and :attr:`params` each symbol's PyTorch element name.
    """

    def __init__(self, data: Dict[str, Any]) -> None:
        import sympy

        self.data = data
        names = [p["symbol"] for p in data["params"]] + [i["symbol"] for i in data["inputs"]]
        #: Symbol name → sympy Symbol.
        self.symbols = {n: sympy.Symbol(n) for n in names}
        local = dict(self.symbols)

        def parse(text: str):
            return sympy.parse_expr(text, local_dict=local)

        self.loss = parse(data["loss"])
        self.outputs = [[parse(e) for e in row] for row in data["outputs"]]
        self.derivatives = {d["symbol"]: parse(d["sympy"]) for d in data["derivatives"]}
        self.values = {p["symbol"]: p["value"] for p in data["params"]}
        self.values.update({i["symbol"]: i["value"] for i in data["inputs"]})
        self.autodiff = {d["symbol"]: d["autodiff"] for d in data["derivatives"]}
        self.params = {p["symbol"]: p["param"] for p in data["params"]}
        self.loss_value = data.get("loss_value")

    def subs(self) -> Dict[Any, float]:
        """``{Symbol: value}``, for ``expr.subs(...)`` / ``expr.evalf(subs=...)``."""
        return {self.symbols[k]: v for k, v in self.values.items()}

    def __str__(self) -> str:
        lines = [f"C = {self.loss}"]
        for s, d in self.derivatives.items():
            lines.append(f"∂C/∂{s} ({self.params[s]}) = {d}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [f"$$C = {self.data.get('loss_latex', '')}$$"]
        for d in self.data["derivatives"]:
            rows.append(
                f"$$\\frac{{\\partial C}}{{\\partial {d['symbol']}}} = {d['latex']} = {d['value']}$$"
            )
        return "\n\n".join(rows)


def symbolic(
    model: Any,
    x: ArrayLike = None,
    y: ArrayLike = None,
    loss: Optional[str] = None,
    symbolic_inputs: bool = False,
) -> Symbolic:
    """The output, the loss and every ∂C/∂θ in closed form as sympy expressions (at
    most 16 samples); with ``symbolic_inputs`` the inputs stay symbols (``x_1``, …)."""
    if isinstance(model, Formula):
        return model.symbolic(symbolic_inputs)
    if x is None or y is None or loss is None:
        raise InvalidValueError("symbolic: x, y and loss are needed for a layer stack")
    m = _model(model)
    xs, ys = _data(m, x, y)
    return Symbolic(json.loads(_chainrule.symbolic(m._m, xs, ys, loss, symbolic_inputs)))


# --- gradcheck ---------------------------------------------------------------------------


def _relative_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| / max(1, |a|, |b|), as chainrule's gradcheck measures it."""
    return np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def _element(name: str, shape: Sequence[int], flat: int) -> str:
    index = np.unravel_index(flat, tuple(shape)) if len(shape) else ()
    return f"{name}[{','.join(str(int(i)) for i in index)}]"


class GradcheckReport:
    """Three gradients of every parameter compared in float64: PyTorch's autograd,
    chainrule's backprop, and central differences of the PyTorch module's forward pass.

    :attr:`passed` is True when all three agree within the tolerance. Otherwise
    :attr:`culprit` names the layer (position, module class, chainrule's operation)
    and which side is wrong, and :attr:`derivation` is chainrule's derivation of the
    worst element. :attr:`rows` holds one dict per parameter tensor.
    """

    def __init__(self, rows, tolerance, culprit, message, derivation, worst):
        self.rows: List[Dict[str, Any]] = rows
        self.tolerance: float = tolerance
        self.culprit: Optional[Dict[str, Any]] = culprit
        self.message: str = message
        self.derivation: Optional[Explanation] = derivation
        #: The worst element, e.g. ``"0.weight[1,0]"`` (None when everything agrees).
        self.worst: Optional[str] = worst

    @property
    def passed(self) -> bool:
        return all(r["worst_error"] <= self.tolerance for r in self.rows)

    def __bool__(self) -> bool:
        return self.passed

    def table(self) -> str:
        head = f"{'tensor':<14} {'elements':>8} {'torch~numeric':>14} {'chainrule~numeric':>18} {'torch~chainrule':>16}"
        lines = [head]
        for r in self.rows:
            mark = "✓" if r["worst_error"] <= self.tolerance else "✗"
            lines.append(
                f"{r['name']:<14} {r['elements']:>8} {r['torch_vs_numeric']:>14.3e} "
                f"{r['chainrule_vs_numeric']:>18.3e} {r['torch_vs_chainrule']:>16.3e} {mark}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        out = self.table() + "\n" + self.message
        if self.derivation is not None:
            out += "\n\n" + str(self.derivation)
        return out

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        out = "```\n" + self.table() + "\n```\n\n" + self.message
        if self.derivation is not None:
            out += "\n\n" + self.derivation._repr_markdown_()
        return out


def _torch_pass(module, x, y, loss_name):
    """PyTorch's loss, parameter gradients, each layer's output and ∂C/∂output."""
    import torch

    outputs: List[Any] = []
    handles = []

    def keep(_m, _inp, out):
        out.retain_grad()
        outputs.append(out)

    for child in module:
        handles.append(child.register_forward_hook(keep))
    try:
        module.zero_grad(set_to_none=True)
        xt = torch.from_numpy(x)
        prediction = module(xt)
        target = _torch.torch_target(y, loss_name, prediction.shape)
        c = _torch.torch_loss(loss_name)(prediction, target)
        c.backward()
    finally:
        for h in handles:
            h.remove()
    grads = {
        k: (p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape)))
        for k, p in module.named_parameters()
    }
    values = [o.detach().numpy().copy() for o in outputs]
    upstream = [
        o.grad.detach().numpy().copy() if o.grad is not None else np.zeros(tuple(o.shape)) for o in outputs
    ]
    return float(c.item()), grads, values, upstream


def _central_differences(module, x, y, loss_name, step, max_elements):
    """Central differences of the PyTorch module's loss, per parameter element (an
    even sample of at most ``max_elements`` per tensor, as chainrule's check)."""
    import torch

    xt = torch.from_numpy(x)
    loss_fn = _torch.torch_loss(loss_name)
    numeric = {}
    with torch.no_grad():
        target = None
        for name, p in module.named_parameters():
            flat = p.data.view(-1)
            out = np.full(flat.numel(), np.nan)
            stride = max(1, -(-flat.numel() // max_elements))
            for e in range(0, flat.numel(), stride):
                old = flat[e].item()
                values = []
                for delta in (step, -step):
                    flat[e] = old + delta
                    prediction = module(xt)
                    if target is None:
                        target = _torch.torch_target(y, loss_name, prediction.shape)
                    values.append(loss_fn(prediction, target).item())
                flat[e] = old
                out[e] = (values[0] - values[1]) / (2 * step)
            numeric[name] = out.reshape(tuple(p.shape))
    return numeric


def gradcheck(
    torch_module: Any,
    x: ArrayLike,
    y: ArrayLike,
    loss: str,
    *,
    tolerance: float = 1e-6,
    step: float = 1e-6,
    input: Optional[Sequence[int]] = None,
    verbose: bool = True,
) -> GradcheckReport:
    """Compares PyTorch's autograd, chainrule's backprop and central differences (of
    the module's own forward pass, step ``step``) for every parameter of
    ``torch_module`` (an ``nn.Sequential``; a copy in float64 is used, the module is
    not changed), on (x, y) as one batch.

    Error measure: |a − b| / max(1, |a|, |b|), worst over each tensor's elements (an
    even sample of at most 2000 per tensor).

    On a disagreement it names the layer (its position, its module class and
    chainrule's operation for it) and which of the three is wrong, and, with
    ``verbose``, prints that and chainrule's derivation of the worst element. A
    subclass of a supported module (a custom ``backward``, say) is compared as its
    base layer. Modules in training mode with dropout are refused (the masks differ).
    """
    import torch

    module = copy.deepcopy(torch_module).double()
    if module.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module):
        raise InvalidValueError(
            "gradcheck: the module is in training mode with dropout, whose random masks "
            "PyTorch and chainrule draw differently; call .eval() first"
        )
    model = Sequential.from_torch(module, input=input, dtype="float64")
    xs = as_array(x, "x").astype(np.float64)
    ys = as_targets(y, "y")
    if ys.dtype.kind == "f":
        ys = ys.astype(np.float64)

    # chainrule: backprop, its own check against its forward pass, and a layer trace.
    _, ours = model.value_and_grad(xs, ys, loss)
    own = _chainrule.gradcheck(model._m, xs, ys, loss, tolerance, step)
    values, upstream, ops, _ = _chainrule.trace(model._m, xs, ys, loss)
    # PyTorch: autograd (with each layer's output and ∂C/∂output), then central
    # differences of its forward pass. Batch norm in training mode counts each
    # forward pass in its running statistics; the copy absorbs that.
    _, theirs, t_values, t_upstream = _torch_pass(module, xs, ys, loss)
    numeric = _central_differences(module, xs, ys, loss, step, 2000)

    rows = []
    worst = (0.0, None, None)
    for name in model.param_names():
        num = numeric[name]
        sampled = ~np.isnan(num)
        t, c, n = theirs[name][sampled], ours[name][sampled], num[sampled]
        errors = {
            "torch_vs_numeric": float(_relative_error(t, n).max(initial=0.0)),
            "chainrule_vs_numeric": float(_relative_error(c, n).max(initial=0.0)),
            "torch_vs_chainrule": float(_relative_error(t, c).max(initial=0.0)),
        }
        all_errors = np.maximum.reduce(
            [_relative_error(theirs[name], num), _relative_error(ours[name], num), _relative_error(theirs[name], ours[name])]
        )
        all_errors = np.where(np.isnan(all_errors), -1.0, all_errors)
        flat = int(np.argmax(all_errors))
        row = {"name": name, "elements": int(sampled.sum()), "worst_error": max(errors.values()), **errors}
        row.update(
            worst_element=_element(name, theirs[name].shape, flat),
            torch=float(theirs[name].reshape(-1)[flat]),
            chainrule=float(ours[name].reshape(-1)[flat]),
            numeric=float(num.reshape(-1)[flat]),
        )
        rows.append(row)
        if row["worst_error"] > worst[0]:
            worst = (row["worst_error"], row["worst_element"], row)

    report_rows = rows
    if all(r["worst_error"] <= tolerance for r in rows):
        message = f"all {len(rows)} tensors agree within {tolerance} (PyTorch autograd, chainrule, central differences) ✓"
        report = GradcheckReport(report_rows, tolerance, None, message, None, None)
        return report

    culprit, message = _blame(module, model, rows, tolerance, values, upstream, ops, t_values, t_upstream, own)
    derivation = None
    try:
        derivation = explain(model, xs, ys, loss, param=worst[1])
    except Exception as e:  # the derivation is a help, not the verdict
        message += f"\n(no derivation of {worst[1]}: {e})"
    report = GradcheckReport(report_rows, tolerance, culprit, message, derivation, worst[1])
    if verbose:
        print(str(report))
    return report


def _blame(module, model, rows, tolerance, values, upstream, ops, t_values, t_upstream, own):
    """Which layer, and which of the three gradients, is wrong."""
    layers = list(module)

    def who(i):
        op = "/".join(dict.fromkeys(ops[i])) or "identity"
        return {"layer": i, "module": type(layers[i]).__name__, "op": op}

    def differs(a, b):
        return a.shape != b.shape or float(_relative_error(a, b).max(initial=0.0)) > tolerance

    # 1. A forward pass that differs: the module computes something else than the
    #    chainrule layer it was taken as.
    for i, (t, c) in enumerate(zip(t_values, values)):
        if differs(t, c):
            c = who(i)
            c["side"] = "forward"
            return c, (
                f"layer {i} ({c['module']}) computes something else than chainrule's "
                f"`{c['op']}`: their outputs differ, so the gradients cannot agree"
            )
    torch_wrong = any(r["torch_vs_numeric"] > tolerance for r in rows)
    ours_wrong = any(r["chainrule_vs_numeric"] > tolerance for r in rows)
    if torch_wrong and not ours_wrong:
        # 2. PyTorch's backward is wrong: walking back from the loss, the first layer
        #    whose ∂C/∂output agrees with chainrule's but whose ∂C/∂input or own
        #    parameter gradients do not.
        for i in reversed(range(len(layers))):
            out_ok = not differs(t_upstream[i], upstream[i])
            in_bad = i > 0 and differs(t_upstream[i - 1], upstream[i - 1])
            params_bad = any(
                r["torch_vs_numeric"] > tolerance for r in rows if r["name"].split(".")[0] == str(i)
            )
            if out_ok and (in_bad or params_bad):
                c = who(i)
                c["side"] = "pytorch backward"
                return c, (
                    f"layer {i} ({c['module']}): PyTorch's backward disagrees with central "
                    f"differences and with chainrule's `{c['op']}` (∂C/∂output agrees, "
                    f"{'∂C/∂input' if in_bad else 'its parameters’ gradients'} do not)"
                )
        return {"side": "pytorch backward"}, "PyTorch's autograd disagrees with central differences"
    # 3. chainrule's backprop is wrong: its own check names the operation.
    named = [c for c in own["culprits"] if c["layer"] is not None]
    if named:
        worst = max(named, key=lambda c: c["error"])
        c = who(worst["layer"])
        c.update(side="chainrule backward", op=worst["label"])
        return c, (
            f"layer {c['layer']} ({c['module']}): chainrule's local derivative of "
            f"`{worst['label']}` disagrees with finite differences (error {worst['error']:.3e})"
        )
    return {"side": "unknown"}, (
        "the gradients disagree but no single layer's operation does; "
        "the step may be too large for this model"
    )
