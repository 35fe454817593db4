"""What ``run.py`` prints from MLflow: each run's table of rounds, and how to open the
MLflow UI and the ZenML dashboard on the results."""

from __future__ import annotations

import sys
from pathlib import Path

from activeit.study.report import verdict_lines
from activeit.study.statistics import Study
from tracking.policy import is_server_uri
from tracking.reader import base_metrics, experiment_page, metric_rows

#: The columns of the round table: metric, title, format.
COLUMNS = (("rougeL", "ROUGE-L", ".2f"), ("exact_match", "EM", ".2f"), ("loglik", "loglik", ".4f"),
           ("train_loss", "loss", ".4f"),
           ("training_time_s", "train s", ".1f"), ("scoring_time_s", "score s", ".1f"))


def print_rounds(tracking_uri: str, run_id: str) -> None:
    """One line per round (training tasks, scores, loss, wall times), after the untuned
    base model's line (0 tasks)."""
    base = base_metrics(tracking_uri, run_id, [key for key, _, _ in COLUMNS])
    header = f"{'round':>5} {'tasks':>6} " + " ".join(f"{title:>8}" for _, title, _ in COLUMNS)
    print("-" * len(header))
    print(header)
    for label, row in [("base", base), *((str(r["round"]), r) for r in metric_rows(tracking_uri, run_id))]:
        cells = [format(row[key], fmt) if key in row else "-" for key, _, fmt in COLUMNS]
        print(f"{label:>5} {int(row.get('num_training_tasks', 0)):>6} " + " ".join(f"{c:>8}" for c in cells))
    print("-" * len(header))


def print_study_verdict(study: Study) -> None:
    """The study's last words: per strategy, its difference to random at the largest budget
    with its calibrated interval and whether it settles the sign, what the study could detect,
    where its spread comes from, and what the selection cost."""
    lines = verdict_lines(study)
    if lines:
        print("\n".join(["Paired statistics (details in study.md):", *(f"- {line}" for line in lines)]))


def _tool(name: str) -> str:
    """A command of this environment (``.venv/bin/mlflow``) as the user types it."""
    beside = Path(sys.executable).with_name(name)
    if not beside.exists():
        return name
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def print_ui_commands(tracking_uri: str, experiment: str) -> None:
    """How to look at the results: the MLflow UI (model-training view of the experiment)
    and the ZenML dashboard, set apart from the log above."""
    page = experiment_page(tracking_uri, experiment)
    if is_server_uri(tracking_uri):
        mlflow_lines = [f"  open {tracking_uri.rstrip('/')}/{page}"]
    else:
        mlflow_lines = [f"  {_tool('mlflow')} ui --backend-store-uri {tracking_uri}",
                        f"  then open http://127.0.0.1:5000/{page}"]
    rule = "=" * 78
    print("\n".join([
        rule,
        "MLflow UI: runs, per-round charts (also against training tasks), task maps, models",
        *mlflow_lines,
        "ZenML dashboard: the pipeline's steps per round and their artifacts",
        f"  {_tool('zenml')} login --local          (then open the URL it prints; stop: zenml logout --local)",
        rule,
    ]))
