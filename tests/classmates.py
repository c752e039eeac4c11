"""A class to test the similarity check on: the example class, independent correct solutions
written in other ways, and one copied pair (renamed identifiers, reordered cells)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

from tests.notebooks import ROOT, submission

# Independent solutions, each written its own way: loops, numpy ufuncs, helpers, a class, tanh.
INDEPENDENT: dict[str, dict] = {
    "rosalind_franklin": dict(bodies={
        "sigmoid_prime": "z = np.asarray(z, dtype=float)\nout = np.empty_like(z)\n"
                         "for index, value in np.ndenumerate(z):\n"
                         "    s = 1.0 / (1.0 + np.exp(-value))\n"
                         "    out[index] = s * (1.0 - s)\n"
                         "return out if out.ndim else float(out)",
        "delta2": "# chain rule: dC/dy_hat times dy_hat/dz2\ndcost = np.subtract(y_hat, y)\n"
                  "dact = sigmoid_prime(z2)\nreturn np.multiply(dcost, dact)",
        "delta1": "back = np.multiply(w2, delta2)\nreturn np.multiply(back, sigmoid_prime(z1))",
        "update": "step = np.multiply(learning_rate, grad)\nreturn np.subtract(w, step)",
    }),
    "lise_meitner": dict(
        cells_before=["def _logistic(t):\n    return 1 / (1 + np.exp(-t))\n\n\n"
                      "def _chain(*factors):\n    result = 1\n    for f in factors:\n"
                      "        result = result * f\n    return result"],
        bodies={
            "sigmoid_prime": "p = _logistic(z)\nreturn p - p ** 2",
            "delta2": "return _chain(y_hat - y, sigmoid_prime(z2))",
            "delta1": "return _chain(delta2, w2, sigmoid_prime(z1))",
            "update": "w_new = w\nw_new = w_new - grad * learning_rate\nreturn w_new",
        }),
    "chien_shiung_wu": dict(bodies={
        "sigmoid_prime": "# sigma(z) = (1 + tanh(z/2)) / 2, so sigma' = (1 - tanh(z/2)**2) / 4\n"
                         "t = np.tanh(np.asarray(z) / 2.0)\nreturn 0.25 * (1.0 - t * t)",
        "delta2": "residual = -(y - y_hat)\nslope = sigmoid_prime(z2)\nreturn residual * slope",
        "delta1": "local = sigmoid_prime(z1)\nreturn local * (w2 * delta2)",
        "update": "return w + (-learning_rate) * grad",
    }),
    "hedy_lamarr": dict(bodies={
        "sigmoid_prime": "e = np.exp(-z)\nreturn e / ((1.0 + e) * (1.0 + e))",
        "delta2": "if np.ndim(y_hat) == 0:\n    return float((y_hat - y) * sigmoid_prime(z2))\n"
                  "return (np.asarray(y_hat) - np.asarray(y)) * sigmoid_prime(z2)",
        "delta1": "d = sigmoid_prime(z1)\nd = d * w2\nreturn d * delta2",
        "update": "lr = float(learning_rate)\nreturn w - lr * grad",
    }),
    "dorothy_vaughan": dict(
        cells_before=["class Sigmoid:\n    \"\"\"The logistic function and its slope.\"\"\"\n\n"
                      "    @staticmethod\n    def value(z):\n"
                      "        return 1.0 / (1.0 + np.exp(-z))\n\n"
                      "    @staticmethod\n    def slope(z):\n        v = Sigmoid.value(z)\n"
                      "        return v * (1.0 - v)"],
        bodies={
            "sigmoid_prime": "return Sigmoid.slope(z)",
            "delta2": "gap = y_hat - y\nreturn gap * sigmoid_prime(z2)",
            "delta1": "upstream = delta2 * w2\nreturn upstream * sigmoid_prime(z1)",
            "update": "# one step downhill\nw = w - learning_rate * grad\nreturn w",
        }),
}

# The original of the copy: a solution with a structure of its own.
ORIGINAL = dict(
    cells_before=["import math\n\n\ndef elementwise(fn, values):\n"
                  "    \"\"\"Apply fn to every entry, keeping the shape.\"\"\"\n"
                  "    arr = np.asarray(values, dtype=float)\n"
                  "    flat = [fn(v) for v in arr.ravel()]\n"
                  "    return np.array(flat).reshape(arr.shape)"],
    bodies={
        "sigmoid_prime": "def one(v):\n    s = 1.0 / (1.0 + math.exp(-v))\n    return s - s * s\n"
                         "result = elementwise(one, z)\n"
                         "return result if result.shape else result.item()",
        "delta2": "err = np.asarray(y_hat, dtype=float) - np.asarray(y, dtype=float)\n"
                  "grad_out = sigmoid_prime(z2)\nreturn err * grad_out",
        "delta1": "through = np.asarray(w2, dtype=float) * delta2\n"
                  "return through * sigmoid_prime(z1)",
        "update": "moved = np.asarray(w, dtype=float) - learning_rate * np.asarray(grad, "
                  "dtype=float)\nreturn moved if moved.shape else moved.item()",
    },
    extra_cells=["for trial in [-3.0, 0.0, 2.5]:\n"
                 "    approx = (1 / (1 + math.exp(-(trial + 1e-6)))\n"
                 "              - 1 / (1 + math.exp(-(trial - 1e-6)))) / 2e-6\n"
                 "    print(trial, sigmoid_prime(trial), approx)"])

# The copy renames every identifier of its own.
RENAMES = {"elementwise": "apply_each", "fn": "func", "values": "xs", "arr": "entries",
           "flat": "items", "one": "single", "s": "sg", "v": "x", "result": "res",
           "err": "diff", "grad_out": "slope_out", "through": "back", "moved": "new_w",
           "trial": "t", "approx": "numeric"}
COPIED = ("marie_curie", "pierre_copy")


def _renamed(text: str) -> str:
    return re.sub(r"\b\w+\b", lambda m: RENAMES.get(m.group(), m.group()), text)


def write_class(folder: Path) -> tuple[str, str]:
    """Write the class into `folder` (one notebook per student); the copied pair's names."""
    for path in sorted((ROOT / "examples" / "submissions").glob("*.ipynb")):
        shutil.copyfile(path, folder / path.name)
    for student, parts in INDEPENDENT.items():
        submission(folder, student, **parts)
    original, copy = COPIED
    submission(folder, original, **ORIGINAL)
    path = submission(folder, copy, bodies={k: _renamed(v) for k, v in ORIGINAL["bodies"].items()},
                      cells_before=[_renamed(c) for c in ORIGINAL["cells_before"]],
                      extra_cells=[_renamed(c) for c in ORIGINAL["extra_cells"]])
    # Reordered: the helper cell moves to the end, and delta1's cell comes before delta2's.
    nb = nbformat.read(path, as_version=4)
    helper = next(i for i, c in enumerate(nb.cells) if "def apply_each" in c.source)
    nb.cells.append(nb.cells.pop(helper))
    d2 = next(i for i, c in enumerate(nb.cells) if "def delta2(" in c.source)
    d1 = next(i for i, c in enumerate(nb.cells) if "def delta1(" in c.source)
    nb.cells[d2], nb.cells[d1] = nb.cells[d1], nb.cells[d2]
    nbformat.write(nb, path)
    return original, copy
