"""Copied-work flags: the code cells of every submission compared pairwise by winnowing.

Each notebook's code cells become one Python text; copydetect (an optional dependency) tokenises
it, so that renamed identifiers read alike, and fingerprints it by winnowing, so that moved
passages still match. Two kinds of code are left out before any comparison: the handout's own
(every student starts from it), and passages that many submissions share (the one-line answer
most students write independently), as MOSS does. What is left is each student's own code; a
pair is flagged when the other holds at least the threshold's share of one's own code.

The flags are evidence for a person to read; nothing here changes a grade.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from grader.classrun.sources import find_submissions, open_source
from grader.errors import GraderError
from grader.run.notebook import UnreadableNotebook, load_notebook
from grader.spec import AssignmentSpec

# copydetect's defaults: passages shorter than 25 characters of tokenised code are noise, and
# every shared passage of 25 is found (a winnowing window of 1).
NOISE = 25
WINDOW = 1
# A passage found in at least this share of the class (and in more than COMMON_MIN submissions)
# is what independent students write alike; a copy is shared by few.
COMMON_SHARE = 0.25
COMMON_MIN = 3
# A student's own code counts as at least this many characters of tokenised code (about eight
# lines): two independent answers of a line or two can coincide whole.
MIN_OWN = 200
# Measured on the example class with independent solutions and one copied pair (README): the
# independent pairs scored at most 0.49, the copy 0.97.
DEFAULT_THRESHOLD = 0.7


class SimilarityUnavailable(GraderError):
    """The optional dependency the similarity check needs is not installed."""


def require_copydetect() -> Any:
    """The copydetect module, or SimilarityUnavailable naming the extra to install."""
    try:
        import copydetect
    except ImportError:
        raise SimilarityUnavailable(
            "the similarity check needs copydetect, which is an optional dependency: "
            "pip install 'backprop-grader[similarity]'") from None
    return copydetect


@dataclass(frozen=True)
class Pair:
    """Two submissions and how much of each one's own code is found in the other."""

    first: str
    second: str
    share_first: float  # the part of first's own code found in second, uncommon in the class
    share_second: float
    passages_first: list[tuple[int, int]]  # character spans of that code in first's text
    passages_second: list[tuple[int, int]]

    @property
    def score(self) -> float:
        """The larger share: a copy padded with code of its own still shows in the original."""
        return max(self.share_first, self.share_second)


@dataclass(frozen=True)
class Similarity:
    """Every pair of a class compared, the texts compared, and those left out and why."""

    codes: dict[str, str]
    pairs: list[Pair]  # every pair, highest score first
    skipped: dict[str, str]  # student -> why their submission was not compared
    threshold: float

    @property
    def flagged(self) -> list[Pair]:
        """The pairs at or above the threshold."""
        return [p for p in self.pairs if p.score >= self.threshold]


def notebook_code(path: Path) -> str:
    """The code cells of a notebook as one Python text, each cell headed by a comment."""
    nb = load_notebook(path)
    cells = [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return "".join(f"# cell {i + 1}\n{source.rstrip()}\n\n" for i, source in cells)


def _fingerprint(code: str, boilerplate: np.ndarray, window: int = WINDOW) -> Any:
    detector = require_copydetect()
    return detector.CodeFingerprint("notebook.py", NOISE, window, boilerplate=boilerplate,
                                    fp=io.StringIO(code))


def _hashes(codes: list[str]) -> np.ndarray:
    """Every fingerprint of the texts, sorted, as copydetect's boilerplate must be."""
    found: set[int] = set()
    for code in codes:
        found |= {int(h) for h in _fingerprint(code, np.array([], dtype=np.int64), 1).hashes}
    return np.array(sorted(found), dtype=np.int64)


def compare_codes(codes: Mapping[str, str], handout: str,
                  threshold: float = DEFAULT_THRESHOLD) -> Similarity:
    """Compare every pair of texts (student -> code): the share of each one's own code (what is
    not the handout's) found in the other, counting only passages uncommon in the class."""
    compare_files = require_copydetect().compare_files
    handout_hashes = _hashes([handout])
    own = {s: _fingerprint(c, handout_hashes) for s, c in codes.items()}
    counts = Counter(h for f in own.values() for h in f.hashes)
    common_at = max(COMMON_MIN + 1, math.ceil(COMMON_SHARE * len(codes)))
    common = np.array(sorted(h for h, n in counts.items() if n >= common_at), dtype=np.int64)
    rare = {s: _fingerprint(c, np.union1d(handout_hashes, common)) for s, c in codes.items()}

    def share(student: str, part: float) -> float:
        # copydetect's share is of the code left after removing the common passages; as a
        # share of all the student's own code (at least MIN_OWN), one common line shared whole
        # is not a whole notebook shared.
        found = part * float(rare[student].token_coverage)
        return found / max(float(own[student].token_coverage), MIN_OWN)

    pairs = []
    for a, b in combinations(sorted(codes), 2):
        _, (part_a, part_b), (slices_a, slices_b) = compare_files(rare[a], rare[b])
        pairs.append(Pair(a, b, share(a, part_a), share(b, part_b), _spans(slices_a),
                          _spans(slices_b)))
    pairs.sort(key=lambda p: (-p.score, p.first, p.second))
    return Similarity(dict(codes), pairs, {}, threshold)


def _spans(slices: np.ndarray) -> list[tuple[int, int]]:
    if slices.size == 0:
        return []
    return [(int(start), int(end)) for start, end in zip(slices[0], slices[1], strict=True)]


def compare_class(source: Path, spec: AssignmentSpec,
                  threshold: float = DEFAULT_THRESHOLD) -> Similarity:
    """Compare the code of every submission in SOURCE (a folder or a zip, as `grader grade`
    reads it) against every other."""
    require_copydetect()  # before any work: the message names the extra to install
    try:
        handout = notebook_code(spec.notebook_path)
    except UnreadableNotebook as exc:
        raise GraderError(f"cannot read the handout {spec.notebook_path}: {exc}") from None
    codes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with open_source(source) as folder:
        for student, sub in find_submissions(folder).items():
            if sub.notebook is None:
                skipped[student] = (f"{len(sub.files)} notebooks" if sub.files
                                    else "no notebook")
                continue
            try:
                codes[student] = notebook_code(sub.notebook)
            except UnreadableNotebook as exc:
                skipped[student] = str(exc)
    result = compare_codes(codes, handout, threshold)
    return Similarity(result.codes, result.pairs, skipped, threshold)
