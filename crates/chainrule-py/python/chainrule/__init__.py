"""chainrule: neural networks whose backpropagation you can see.

The Rust library computes; this package gives it PyTorch's API and Jupyter's displays::

    import chainrule, torch
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    model = chainrule.Sequential.from_torch(net)
    grads = model.grad(x, y, "mse")                  # {"0.weight": array, ...}
    chainrule.explain(net, x, y, "mse", param="0.weight[1,0]", lr=0.1)   # typeset in Jupyter
    chainrule.gradcheck(net, x, y, "mse")            # autograd vs chainrule vs finite differences
"""

from . import _chainrule
from ._explain import (
    Explanation,
    Formula,
    GradcheckReport,
    Graph,
    Symbolic,
    explain,
    gradcheck,
    graph,
    symbolic,
)
from ._model import History, Sequential, load
from .errors import (
    Error,
    FileNotFoundError,
    FormatError,
    InternalError,
    InvalidValueError,
    IOError,
    NonFiniteError,
    ShapeError,
    UnsupportedLayerError,
)

__version__ = _chainrule.__version__

LOSSES = ("mse", "sse", "half_sse", "mae", "huber", "bce", "bce_logits", "cross_entropy")

__all__ = [
    "Sequential",
    "History",
    "load",
    "explain",
    "Explanation",
    "graph",
    "Graph",
    "symbolic",
    "Symbolic",
    "gradcheck",
    "GradcheckReport",
    "Formula",
    "Error",
    "ShapeError",
    "InvalidValueError",
    "FormatError",
    "UnsupportedLayerError",
    "FileNotFoundError",
    "IOError",
    "NonFiniteError",
    "InternalError",
    "LOSSES",
]
