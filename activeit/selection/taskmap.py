"""The task map: tasks placed by prompt uncertainty (x) and prediction probability (y).

Categories are rank-based, with no fixed thresholds (docs/METHOD.md, "The task map"): the third of the tasks
with the highest PU are *ambiguous*; the others are split at their PP median into *easy*
(higher PP) and *difficult* (lower PP). Ties are broken by task name. A task that adaptive
scoring stopped early is placed by its PU estimate, drawn hollow with its PU interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from activeit.scoring.scores import ScoreTable

CATEGORIES = ("ambiguous", "easy", "difficult")
COLOURS = {"ambiguous": "#d62728", "easy": "#2ca02c", "difficult": "#1f77b4"}
MAX_LABELS = 16
LABEL_CHARS = 32


def categorize(table: ScoreTable) -> dict[str, str]:
    """Task name -> "ambiguous" | "easy" | "difficult" (see the module docstring)."""
    rows = sorted(table.rows, key=lambda r: (-r.pu, r.task))
    ambiguous = rows[: round(len(rows) / 3)]
    rest = sorted(rows[len(ambiguous) :], key=lambda r: (-r.pp, r.task))
    easy = rest[: (len(rest) + 1) // 2]
    categories = {r.task: "ambiguous" for r in ambiguous}
    categories |= {r.task: "easy" for r in easy}
    categories |= {r.task: "difficult" for r in rest[len(easy) :]}
    return {r.task: categories[r.task] for r in table.rows}


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "\u2026"


def _labelled(table: ScoreTable, selected: set[str]) -> list[str]:
    """Every task when few; else the selected ones and the extremes, at most MAX_LABELS."""
    if len(table) <= MAX_LABELS:
        return list(table.tasks)
    rows = table.rows
    extremes = [
        max(rows, key=lambda r: r.pu).task, min(rows, key=lambda r: r.pu).task,
        max(rows, key=lambda r: r.pp).task, min(rows, key=lambda r: r.pp).task,
    ]
    chosen = [r.task for r in sorted(rows, key=lambda r: -r.pu) if r.task in selected]
    names = list(dict.fromkeys(extremes + chosen))
    return names[:MAX_LABELS]


def _annotate(ax: object, table: ScoreTable, names: list[str]) -> None:
    """Label ``names`` without overlaps: each label takes the first free slot beside its
    point, right or left, then nudged up or down (positions in axes fractions)."""
    to_axes = ax.transScale + ax.transLimits  # type: ignore[attr-defined]
    width, height, gap = 0.3, 0.03, 0.012
    placed: list[tuple[float, float, float]] = []  # (x0, x1, y) of each label
    for name in sorted(names, key=lambda n: -table[n].pu):
        row = table[name]
        x, y = to_axes.transform((row.pu, row.pp))
        sides = ("right", "left") if x < 1 - width - gap else ("left", "right")
        slots = [(side, y + dy) for step in range(12) for dy in {step * height, -step * height}
                 for side in sides]
        for side, ty in slots:
            x0, x1 = (x + gap, x + gap + width) if side == "right" else (x - gap - width, x - gap)
            if x0 >= 0 and x1 <= 1 and 0 <= ty <= 1 and not any(
                abs(ty - py) < height and x0 < px1 and px0 < x1 for px0, px1, py in placed
            ):
                break
        placed.append((x0, x1, ty))
        ax.annotate(  # type: ignore[attr-defined]
            _short(name), (row.pu, row.pp), xytext=(x0 if side == "right" else x1, ty),
            textcoords="axes fraction", ha="left" if side == "right" else "right", va="center",
            fontsize=7, alpha=0.9,
            arrowprops={"arrowstyle": "-", "lw": 0.5, "alpha": 0.5} if abs(ty - y) > 1e-9 else None,
        )


def plot_task_map(
    table: ScoreTable, path: str | Path, selected: Iterable[str] = (), title: str | None = None
) -> Path:
    """Write the task map PNG: x = PU on a cube-root axis, y = PP, colour = category.

    Selected tasks get a larger marker with a black edge; labels go to every task when
    there are few, else to the selected and the extreme tasks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FormatStrFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = set(selected)
    categories = categorize(table)
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=120)
    ax.set_xscale("function", functions=(np.cbrt, lambda x: np.power(x, 3)))
    for category in CATEGORIES:
        rows = [r for r in table.rows if categories[r.task] == category]
        if not rows:
            continue
        plain = [r for r in rows if r.task not in chosen and not r.stopped_early]
        picked = [r for r in rows if r.task in chosen and not r.stopped_early]
        ax.scatter([r.pu for r in plain], [r.pp for r in plain], s=28, c=COLOURS[category], alpha=0.6,
                   edgecolors="none", label=f"{category} ({len(rows)})", zorder=2)
        ax.scatter([r.pu for r in picked], [r.pp for r in picked], s=90, c=COLOURS[category], alpha=0.95,
                   edgecolors="black", linewidths=1.4, zorder=3)
        for r in (r for r in rows if r.stopped_early):  # hollow, with the interval of its PU
            ax.errorbar(r.pu, r.pp, xerr=[[r.pu - r.pu_low], [r.pu_high - r.pu]], fmt="none",
                        ecolor=COLOURS[category], elinewidth=0.8, capsize=2, alpha=0.5, zorder=1)
            ax.scatter([r.pu], [r.pp], s=90 if r.task in chosen else 28, facecolors="white",
                       edgecolors="black" if r.task in chosen else COLOURS[category],
                       linewidths=1.4 if r.task in chosen else 1.0, zorder=3)
    stopped = sum(r.stopped_early for r in table.rows)
    if stopped:
        ax.scatter([], [], s=28, facecolors="white", edgecolors="grey", label=f"stopped early, PU interval ({stopped})")
    if chosen & set(categories):
        ax.scatter([], [], s=90, facecolors="white", edgecolors="black", linewidths=1.4,
                   label=f"selected ({len(chosen & set(categories))})")
    top = max(max((r.pu for r in table.rows), default=0.0) * 1.1, 1e-9)
    ax.set_xlim(0, top)
    ax.set_xticks(sorted({float(f"{top * f:.2g}") for f in np.linspace(0, 0.95, 6) ** 3}))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    low, high = min((r.pp for r in table.rows), default=0.0), max((r.pp for r in table.rows), default=1.0)
    margin = max(high - low, 1e-3) * 0.08
    ax.set_ylim(low - margin, high + margin)
    _annotate(ax, table, _labelled(table, chosen))
    ax.set_xlabel("prompt uncertainty (PU), cube-root scale")
    ax.set_ylabel("prediction probability (PP)")
    ax.set_title(title or f"Task map ({len(table)} tasks)")
    ax.grid(True, alpha=0.3)
    if len(table):
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
