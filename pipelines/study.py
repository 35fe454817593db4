"""Studies: strategies x seeds of active-tuning runs, and the files of their report.

The runs of a study may execute anywhere and in any order (locally one after the other, or
as separate pipeline runs on a remote stack); a study is read back from MLflow alone
(:mod:`tracking.study`), so ``run.py --report EXPERIMENT`` rebuilds the same study as the run
that made it. The statistics are :mod:`activeit.study.statistics`'s and the report
:mod:`activeit.study.report`'s; this module names the study's folder and writes its files.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from activeit.evaluation import HEADLINE_METRICS, ROUGE_L
from activeit.selection.taskmap import CATEGORIES
from activeit.study.plots import plot_learning_curve, plot_overlap
from activeit.study.report import study_markdown
from activeit.study.statistics import Study
from tracking.study import study_run_name


def study_folder(experiment: str, subset: Study | None = None, metric: str = ROUGE_L) -> str:
    """The output folder of an experiment's study (``study-<experiment>``, ``-<metric>`` added
    for a study on another metric than ROUGE-L); a subset of it (``--report`` with
    ``--strategies`` / ``--seeds``) gets its own, named after what it holds."""
    if subset:
        return f"study-{experiment}-{study_run_name(subset).removeprefix('study-')}"
    return f"study-{experiment}" + ("" if metric == ROUGE_L else f"-{metric}")


def _write_csv(path: Path, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_study(study: Study, out_dir: Path, title: str) -> list[Path]:
    """``study.csv``, ``study.md``, ``learning_curve.png``, ``selection_overlap.csv`` /
    ``.png`` and ``pick_categories.csv`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        _write_csv(out_dir / "study.csv", study.rows(), ("strategy", "seed", "round", "training_tasks", *HEADLINE_METRICS)),
        out_dir / "study.md",
        plot_learning_curve(study, out_dir / "learning_curve.png", title),
    ]
    files[1].write_text(study_markdown(study, title), encoding="utf-8")
    overlap = study.overlap()
    if overlap:
        files.append(_write_csv(out_dir / "selection_overlap.csv", overlap, ("first", "second", "round", "jaccard", "seeds")))
        files.append(plot_overlap(study, out_dir / "selection_overlap.png", title))
    shares = study.category_shares()
    if shares:
        rows = [{"strategy": s, **share} for s, share in shares.items()]
        files.append(_write_csv(out_dir / "pick_categories.csv", rows, ("strategy", *CATEGORIES)))
    return files
