"""Figures of a study: the learning curve over seeds and the selection-overlap heat map."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from activeit.evaluation import ROUGE_L
from activeit.study.statistics import REFERENCE, Study


def _pyplot() -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(study: Study, strategy: str) -> list[tuple[int, float, float]]:
    """(training tasks, mean, std over seeds) of each round of ``strategy``, by training tasks."""
    points = []
    for round_index, tasks in study.rounds_of(strategy):
        summary = study.summary(strategy, round_index)
        if summary is not None:
            points.append((tasks, summary.mean, 0.0 if math.isnan(summary.std) else summary.std))
    return sorted(points)


def shared_curves(study: Study) -> list[tuple[tuple[tuple[int, float, float], ...], list[str]]]:
    """Each distinct learning curve (training tasks, mean, std per round) with the strategies
    that have it, in the study's order: strategies that picked alike on every seed share one."""
    curves: dict[tuple[tuple[int, float, float], ...], list[str]] = {}
    for strategy in study.strategies:
        curves.setdefault(tuple(_curve(study, strategy)), []).append(strategy)
    return list(curves.items())


def plot_learning_curve(study: Study, path: str | Path, title: str) -> Path:
    """Mean of the study's metric (ROUGE-L or the log-likelihood) per strategy against training tasks, a ±1 std band over seeds, and the
    untuned base model as a dashed line. Strategies whose curves are identical (they picked the
    same tasks on every seed) share one line, labelled with all their names."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=130)  # type: ignore[attr-defined]
    for points, strategies in shared_curves(study):
        xs, means, stds = zip(*points) if points else ((), (), ())
        style = {"linewidth": 2.4} if REFERENCE not in strategies else {"linewidth": 2.0, "color": "0.35"}
        seeds = len({r.seed for r in study.runs if r.strategy == strategies[0]})
        shared = "identical curves, " if len(strategies) > 1 else ""
        label = f"{' = '.join(strategies)} ({shared}{seeds} seeds)"
        line = ax.plot(xs, means, marker="o", label=label, **style)[0]
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    base = study.base()
    if base is not None:
        ax.axhline(base.mean, color="black", linestyle="--", linewidth=1.2, label=f"base model, untuned ({base.mean:.{1 if study.metric == ROUGE_L else 3}f})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of training tasks")
    ax.set_ylabel("ROUGE-L on unseen test tasks (x100)" if study.metric == ROUGE_L
                  else "log-likelihood of the references on unseen test tasks (nats/token)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)  # type: ignore[attr-defined]
    return Path(path)


def plot_overlap(study: Study, path: str | Path, title: str) -> Path:
    """Heat map of the mean Jaccard overlap of each pair of strategies' training sets at
    their last common round."""
    plt = _pyplot()
    strategies = study.strategies
    overlap = study.overlap()
    size = len(strategies)
    matrix = [[1.0 if i == j else math.nan for j in range(size)] for i in range(size)]
    last = max((o["round"] for o in overlap), default=0)
    for row in overlap:
        if row["round"] == last:
            i, j = strategies.index(row["first"]), strategies.index(row["second"])
            matrix[i][j] = matrix[j][i] = row["jaccard"]
    fig, ax = plt.subplots(figsize=(3.2 + 1.1 * size, 1.6 + 1.0 * size), dpi=130)  # type: ignore[attr-defined]
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(size), strategies, rotation=30, ha="right")
    ax.set_yticks(range(size), strategies)
    for i in range(size):
        for j in range(size):
            if not math.isnan(matrix[i][j]):
                ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center",
                        color="white" if matrix[i][j] < 0.6 else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label="Jaccard overlap")
    ax.set_title("\n".join(textwrap.wrap(title, 48)) + f"\ntraining sets at round {last}, mean over seeds", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)  # type: ignore[attr-defined]
    return Path(path)
