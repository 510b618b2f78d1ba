"""Executes notebooks/000.ipynb … 004.ipynb headless and asserts the numbers the seed
notebooks (shared/notebooks) print."""

import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from conftest import REPO, close  # noqa: E402


def run(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()
    text = []
    displays = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            elif "data" in out:
                displays.append(out["data"])
    return "".join(text), displays


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def numbers(text, label):
    """The numbers on every line that starts with ``label``, line by line."""
    found = []
    for line in text.splitlines():
        if line.startswith(label):
            found.append([float(v) for v in re.findall(NUMBER, line[len(label):])])
    assert found, f"no line starts with {label!r} in:\n{text}"
    return found


def test_notebook_000(tmp_path):
    text, displays = run("000")
    assert "Predicted: 2.5 --> True value should be: 2" in text
    close(numbers(text, "loss:")[0], [0.25])
    assert numbers(text, "factors:")[0] == [1.5, 1.0, 1.0]
    close(numbers(text, "deriv_L_w5:")[0], [1.5])
    close(numbers(text, "new_w5:")[0], [0.985], 1e-12)
    new = text.split("NEW WEIGHTS AND BIASES")[1]
    want = dict(w1=0.99, w2=0.49, w3=1.0, w4=-0.5, w5=0.985, w6=0.995, b1=0.49, b2=-0.01, b3=0.49)
    for name, value in want.items():
        close(numbers(new, f"{name}:")[0], [value], 1e-12)
    assert any("text/markdown" in d for d in displays)  # the typeset derivation
    assert any("image/svg+xml" in d for d in displays)  # the graph
    assert any("agree" in d.get("text/plain", "") for d in displays)  # gradcheck


def test_notebook_001():
    text, _ = run("001")
    close(numbers(text, "new w:")[0], [1.8], 1e-12)
    close([v[0] for v in numbers(text, "New w_2:")][:2], [1.0, 0.6], 1e-12)
    close([v[0] for v in numbers(text, "New w_1:")][:2], [-1.0, -0.6], 1e-12)
    close(numbers(text, "y_hat: ")[0], [-1.0, 4.0], 1e-12)
    close(numbers(text, "y_hat: ")[1], [-0.36, 1.8495999999999997], 1e-12)
    close(numbers(text, "New w_2:")[2], [2.0040000160377818], 1e-12)
    close(numbers(text, "New b_2:")[0], [2.0045413593412063], 1e-12)
    close(numbers(text, "New w_1:")[2], [1.000953627199678], 1e-12)
    close(numbers(text, "New b_1:")[0], [1.000953627199678], 1e-12)
    close(numbers(text, "y_hat: ")[2], [0.9774686759735803, 1.045570308615223], 1e-12)
    # Keras prints the starting prediction in float32: 0.9772815.
    assert abs(numbers(text, "before: y_hat:")[0][0] - 0.9772815) < 5e-8


def test_notebook_002():
    text, _ = run("002")
    close(numbers(text, "xw0, xw1, xw2:")[0], [-3.0, 2.0, 6.0])
    close(numbers(text, "y:")[0], [6.0])
    close(numbers(text, "relu_dz:")[0], [1.0])
    row = [0.44, -0.38, -0.07, 1.37]
    close(numbers(text, "dinputs_single:")[0], row, 1e-12)
    close(numbers(text, "dinputs_batch:")[0], [v * k for k in (1, 2, 3, 4) for v in row], 1e-12)
    close(numbers(text, "dweights_T:")[0], [v for v in (-9.1, 16.1, 9.7, -5.1) for _ in range(3)], 1e-12)
    close(numbers(text, "dbiases_list:")[0], [10.0, 10.0, 10.0], 1e-12)


def test_notebook_003():
    text, displays = run("003")
    close(numbers(text, "f5 =")[0], [0.649864477526152], 1e-15)
    close(numbers(text, "f5 (one weight at a time) =")[0], [0.999453185534398], 1e-12)
    close(numbers(text, "f5 (simultaneous) =")[0], [0.9994550920282003], 1e-12)
    assert any("text/markdown" in d for d in displays)


def test_notebook_004():
    text, _ = run("004")
    close(numbers(text, "Prediction by network:")[0], [1.98], 1e-12)
    close(numbers(text, "Ground truth:")[0], [7.0])
    close(numbers(text, "Loss:")[0], [12.6002], 1e-12)
    close(numbers(text, "Gradients layer 1:")[0], [-8.534, -17.068, 0.0, 0.0], 1e-12)
    close(numbers(text, "Gradients layer 2:")[0], [-2.51, -3.263, 0.0, -11.546, -15.0098, 0.0], 1e-12)
    close(numbers(text, "Gradients layer 3:")[0], [-5.02, -6.1746, -2.761], 1e-12)
    close(numbers(text, "Updated prediciton")[0], [2.1435048475206897], 1e-12)
    close(numbers(text, "Loss:")[1], [11.792772583027517], 1e-12)
