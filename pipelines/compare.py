"""Compare strategies: a table and a learning curve (ROUGE-L vs. training tasks) built from
the runs' MLflow metric histories, written to files and logged as one MLflow run."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from steps.mlflow_logging import metric_rows

COLUMNS = ("strategy", "round", "num_training_tasks", "rougeL", "rougeL_classification",
           "rougeL_generation", "exact_match")


def find_run_id(tracking_uri: str, experiment: str, run_name: str) -> str:
    """The MLflow run a ZenML pipeline run logged to (named after it)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=f'tags.mlflow.runName = "{run_name}"',
    )
    if not found:
        raise LookupError(f"no MLflow run named '{run_name}' in experiment '{experiment}'")
    return found[0].info.run_id


def comparison_rows(tracking_uri: str, runs: Mapping[str, str]) -> list[dict[str, object]]:
    """One row per (strategy, round) from the runs' metric histories (strategy -> run id)."""
    rows = [
        {"strategy": strategy, **row}
        for strategy, run_id in runs.items()
        for row in metric_rows(tracking_uri, run_id)
    ]
    for row in rows:
        row["num_training_tasks"] = int(row.get("num_training_tasks", 0))
    return rows


def _markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """ROUGE-L by number of training tasks (rows) and strategy (columns)."""
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in rows))
    sizes = sorted({int(r["num_training_tasks"]) for r in rows})
    value = {(str(r["strategy"]), int(r["num_training_tasks"])): r.get("rougeL") for r in rows}
    lines = ["| training tasks | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for size in sizes:
        cells = [f"{value[(s, size)]:.2f}" if value.get((s, size)) is not None else "" for s in strategies]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "ROUGE-L (x100) on the test tasks\n\n" + "\n".join(lines) + "\n"


def _plot(rows: Sequence[Mapping[str, object]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for strategy in dict.fromkeys(str(r["strategy"]) for r in rows):
        points = sorted((int(r["num_training_tasks"]), float(r["rougeL"]))
                        for r in rows if r["strategy"] == strategy and r.get("rougeL") is not None)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=strategy)
    ax.set_xlabel("number of training tasks")
    ax.set_ylabel("ROUGE-L on test tasks (x100)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_comparison(rows: Sequence[Mapping[str, object]], out_dir: Path, title: str) -> list[Path]:
    """``comparison.csv``, ``comparison.md`` and ``learning_curve.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "comparison.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    markdown = out_dir / "comparison.md"
    markdown.write_text(f"# {title}\n\n{_markdown(rows)}", encoding="utf-8")
    return [table, markdown, _plot(rows, out_dir / "learning_curve.png", title)]


def log_comparison(
    tracking_uri: str, experiment: str, runs: Mapping[str, str], files: Sequence[Path],
    rows: Sequence[Mapping[str, object]], seed: int,
) -> str:
    """One MLflow run holding the comparison files and, per strategy, ``rougeL_<strategy>``
    with ``step`` = number of training tasks (the curves side by side in the UI)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"compare-{'-vs-'.join(runs)}-seed{seed}") as run:
        mlflow.set_tags({"comparison": "true", "strategies": ",".join(runs), "seed": str(seed)}
                        | {f"run_{s}": run_id for s, run_id in runs.items()})
        for row in rows:
            if row.get("rougeL") is not None:
                mlflow.log_metric(f"rougeL_{row['strategy']}", float(row["rougeL"]),
                                  step=int(row["num_training_tasks"]))
        for path in files:
            mlflow.log_artifact(str(path))
        return run.info.run_id
