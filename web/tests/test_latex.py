"""The LaTeX that `chainrule explain --format markdown` and `chainrule symbolic
--format latex` write parses in KaTeX (issue 15, item 3): every `$$ … $$` block of
their output on the notebooks' examples and on a trained spiral run is rendered by
the KaTeX that web/build.sh fetched (web/dist/katex/katex.min.js), run by Node with
`throwOnError`, so a block KaTeX cannot typeset fails the test with KaTeX's message.

Environment: CHAINRULE (the binary; default target/debug/chainrule), NODE (default
`node` on the PATH).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Relative to the repository (the tests run the binary in other folders too).
CHAINRULE = ROOT / Path(os.environ.get("CHAINRULE", "target/debug/chainrule"))
KATEX = ROOT / "web" / "dist" / "katex" / "katex.min.js"
NODE = os.environ.get("NODE", shutil.which("node") or "node")

RENDER = r"""
const katex = require(process.argv[1]);
const blocks = JSON.parse(require("fs").readFileSync(0, "utf8"));
const errors = [];
for (const tex of blocks) {
  try { katex.renderToString(tex, { displayMode: true, throwOnError: true, strict: "error" }); }
  catch (e) { errors.push({ tex, error: String(e.message || e) }); }
}
process.stdout.write(JSON.stringify(errors));
"""


def chainrule(*args, cwd=ROOT):
    out = subprocess.run([str(CHAINRULE), *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


def blocks(markdown):
    found = re.findall(r"\$\$(.+?)\$\$", markdown, flags=re.S)
    assert found, f"no $$ block in: {markdown[:400]}"
    return [b.strip() for b in found]


def katex_errors(tex_blocks):
    out = subprocess.run(
        [NODE, "-e", RENDER, str(KATEX)],
        input=json.dumps(tex_blocks),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def spiral_run(tmp_path_factory):
    """A short spiral run: a 2-64-64-3 ReLU network, so that sums run over 64 units
    and, with 40 samples, over many samples."""
    folder = tmp_path_factory.mktemp("latex")
    chainrule("train", "--name", "r", "--epochs", "2", "--quiet", cwd=folder)
    return folder / "runs" / "r"


CASES = {
    "notebook 000": ["explain", "examples/notebooks/000", "--format", "markdown"],
    "notebook 001, single weight": ["explain", "examples/notebooks/001_single_weight", "--format", "markdown"],
    "notebook 001, two weights": ["explain", "examples/notebooks/001_two_weights", "--format", "markdown"],
    "notebook 001, sigmoid and biases": ["explain", "examples/notebooks/001_sigmoid_biases", "--format", "markdown"],
    "notebook 003": ["explain", "examples/notebooks/003", "--format", "markdown"],
    "notebook 004": ["explain", "examples/notebooks/004", "--format", "markdown"],
    "notebook 003, symbolic": ["symbolic", "examples/notebooks/003", "--format", "latex"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_notebooks_derivations_typeset_in_katex(name):
    args = CASES[name]
    text = chainrule(*args)
    assert katex_errors(blocks(text)) == []


@pytest.mark.parametrize(
    "param",
    ["0.weight[3,1]", "2.bias[5]", "4.weight[2,7]"],
)
def test_a_runs_derivations_over_many_samples_and_units_typeset_in_katex(spiral_run, param):
    text = chainrule(
        "explain", str(spiral_run), "--param", param, "--samples", "0..40", "--format", "markdown"
    )
    found = blocks(text)
    # 40 samples: the largest products are written out and the rest totalled.
    assert "the other" in text
    assert katex_errors(found) == []


def test_a_small_runs_symbolic_output_typesets_in_katex(tmp_path):
    # symbolic writes a whole network as one formula, so a small one: 2-4-3, tanh.
    chainrule(
        "train", "--name", "s", "--layers", "2,4,3", "--activation", "tanh", "--epochs", "1",
        "--quiet", cwd=tmp_path,
    )
    text = chainrule("symbolic", str(tmp_path / "runs" / "s"), "--sample", "0", "--format", "latex")
    assert katex_errors(blocks(text)) == []


def test_katex_does_reject_what_it_cannot_typeset():
    # The check itself: a broken block is reported, not passed.
    assert len(katex_errors([r"\frac{1}{", r"x^{2}"])) == 1
