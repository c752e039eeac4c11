"""summary.png: the class at a glance, drawn from the class summary and the reports alone."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from grader.files import write_atomic
from grader.outputs.summary import class_mistakes, class_summary
from grader.report import Report
from grader.spec import AssignmentSpec


def summary_png(reports: Mapping[str, Report], spec: AssignmentSpec) -> bytes:
    """The class at a glance: score distribution, full marks per function, common mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    summary = class_summary(reports, spec)
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    scores_ax, pass_ax, mistakes_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    fig.suptitle(f"{spec.title}: {len(reports)} submissions", fontsize=12)

    top = spec.max_score
    scores_ax.hist([r.score for r in reports.values()], bins=min(12, max(4, int(top) + 1)),
                   range=(0, top), color="#4c72b0", edgecolor="white")
    scores_ax.set(title="Score distribution", xlabel=f"score (out of {top:g})",
                  ylabel="students")
    scores_ax.yaxis.get_major_locator().set_params(integer=True)

    functions = summary.functions[::-1]  # the first function at the top
    bars = pass_ax.barh([f.name for f in functions],
                        [summary.full_marks_percent(f) for f in functions], color="#55a868")
    pass_ax.bar_label(bars, fmt="%.0f%%", padding=3)
    pass_ax.set(title="Full marks per function", xlim=(0, 115), xlabel="% of submissions")

    common = class_mistakes(reports).most_common(8)
    if common:
        ids = [m for m, _ in common][::-1]
        bars = mistakes_ax.barh(ids, [n for _, n in common][::-1], color="#c44e52")
        mistakes_ax.bar_label(bars, padding=3)
        mistakes_ax.xaxis.get_major_locator().set_params(integer=True)
        mistakes_ax.set_xlim(0, max(n for _, n in common) * 1.25)
    else:
        mistakes_ax.text(0.5, 0.5, "no known mistake found", ha="center", va="center",
                         transform=mistakes_ax.transAxes)
        mistakes_ax.set_yticks([])
    mistakes_ax.set(title="Most common misconceptions", xlabel="students")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_summary_png(path: Path, reports: Mapping[str, Report], spec: AssignmentSpec) -> None:
    """Write the class picture atomically: never half a picture."""
    write_atomic(path, summary_png(reports, spec))
