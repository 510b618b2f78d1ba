#!/usr/bin/env python3
"""Check with sympy that chainrule's symbolic output parses and gives autodiff's numbers.

    pip install sympy && python3 tools/check_sympy.py

For every network in examples/notebooks/ (through `chainrule symbolic --format json`),
notebook 003's shared-bias formula network included, and every activation reference
case (crates/chainrule/tests/reference/f64_activation_*), it parses the loss and each partial derivative with sympy.sympify, substitutes the
parameter (and input) values, and compares with the gradient chainrule's autodiff
computed. It also differentiates the loss with sympy itself and compares again.
"""
import json
import subprocess
import sys
from pathlib import Path

import sympy

ROOT = Path(__file__).resolve().parent.parent


def run(args):
    return json.loads(subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def check(name, report):
    values = {sympy.Symbol(k): v for k, v in {**report["params"], **report["inputs"]}.items()}
    loss = sympy.sympify(report["loss"])
    worst = 0.0
    for symbol, entry in report["derivatives"].items():
        ours = float(sympy.sympify(entry["sympy"]).subs(values).evalf(30))
        theirs = float(sympy.diff(loss, sympy.Symbol(symbol)).subs(values).evalf(30))
        want = entry["autodiff"]
        for got in (ours, theirs):
            worst = max(worst, abs(got - want) / max(1.0, abs(want)))
    print(f"{name}: {len(report['derivatives'])} derivatives, worst relative error {worst:.1e}")
    return worst < 1e-9


def main():
    cargo = ["cargo", "run", "-q", "--release"]
    ok = True
    for folder in sorted((ROOT / "examples" / "notebooks").iterdir()):
        if folder.is_dir():
            report = run(cargo + ["-p", "chainrule-cli", "--", "symbolic", str(folder), "--format", "json"])
            ok &= check(folder.name, report)
    # The activations' PyTorch reference cases (tools/make_reference.py): each new
    # activation written out in sympy's terms (Piecewise, erf) and differentiated.
    reference = ROOT / "crates" / "chainrule" / "tests" / "reference"
    for folder in sorted(reference.glob("f64_activation_*")):
        loss = json.loads((folder / "config.json").read_text())["loss"]
        report = run(cargo + ["-p", "chainrule-cli", "--", "symbolic", str(folder), "--loss", loss, "--format", "json"])
        ok &= check(folder.name, report)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
