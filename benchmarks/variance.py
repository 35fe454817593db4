"""What shrinks a study's spread? The sd of the paired differences and the MDE per metric and test sample.

Reads a finished study from MLflow under the current ZenML store (as ``run.py --report``
does) and, at its largest budget, compares each strategy with random (an A/A pair such as
``random-b`` shows the noise floor) under four ways of measuring the same trained models:

* ``rougeL``, ``loglik``: ROUGE-L and the reference log-likelihood on the evaluation the runs
  logged (``evaluation.max_instances_per_task`` instances of each test task);
* ``rougeL-all``, ``loglik-all``: both again on **every** instance of every test task (the
  pool without ``pool.max_instances``), by re-evaluating each run's last-round model, loaded
  from its ZenML artifact, with the project's own evaluator (the same code for every row; the
  models, and so the selection and training, are those of the study).

Per option and strategy it prints the sd of the per-seed paired differences, the MDE at the
study's seeds (80% power), the test sample's share of the variance, and the MDE as a share of
random's mean learning gain (last round minus the untuned base model, in the same metric):
metrics in different units compare on that last figure. The re-evaluations are kept in
``--cache`` (a JSON file) so a rerun evaluates only what is missing.

    python benchmarks/variance.py activeit-default
    python benchmarks/variance.py activeit-smoke --config configs/smoke.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.evaluation import LOGLIK, ROUGE_L  # noqa: E402
from activeit.study.statistics import REFERENCE, RoundRecord, RunRecord, Study  # noqa: E402
from benchmarks.adaptive import bad_input_exits_2  # noqa: E402
from benchmarks.calibration import read_study, study_parser  # noqa: E402

#: Every instance of a test task (more than any pool task has).
ALL_INSTANCES = 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = study_parser("python benchmarks/variance.py", __doc__)
    parser.add_argument("--cache", type=Path, default=None,
                        help="JSON file of the re-evaluations (default: outputs/variance-<experiment>.json)")
    parser.add_argument("--no-reevaluate", action="store_true",
                        help="only the options the runs logged (no model is loaded)")
    args = parser.parse_args(argv)
    if args.cache is not None and args.cache.is_dir():
        raise SystemExit(f"--cache {args.cache} is a folder; give a JSON file")
    return args


def _reevaluate(config_path: Path, record: RunRecord, round_index: int, run_name: str) -> dict[str, Any]:
    """Per test task, ROUGE-L and the log-likelihood of the run's model of ``round_index``
    (``-1``: the untuned base model) on every instance of the seed's test tasks."""
    from zenml.client import Client

    from activeit.data.sources import load_pool_from
    from activeit.evaluation import evaluate_model, evaluation_tasks
    from experiment.config import load_config
    from activeit.models.devices import place_model
    from activeit.models.loading import load_model

    seeded = load_config(config_path, {"seed": record.seed})
    pool = load_pool_from(seeded.pool.model_copy(update={"max_instances": None}), need_test_tasks=True)
    evaluation = seeded.evaluation.model_copy(update={"max_instances_per_task": ALL_INSTANCES})
    if round_index < 0:
        name = seeded.model
    else:
        step = Client().get_pipeline_run(run_name).steps[f"accelerate_finetuner_round_{round_index}"]
        name = step.outputs[f"model_round_{round_index}"][0].load().path
    report = evaluate_model(place_model(load_model(name)), evaluation_tasks(pool, evaluation), evaluation, progress=False)
    return {"instances": report.overall["instances"],
            "per_task": {task: {ROUGE_L: m[ROUGE_L], LOGLIK: m[LOGLIK]} for task, m in report.per_task.items()},
            "overall": {ROUGE_L: report.overall[ROUGE_L], LOGLIK: report.overall[LOGLIK]}}


def _with_all_instances(study: Study, found: dict[str, Any], final: int) -> Study:
    """The study's records with the last round and the base replaced by the re-evaluations."""
    runs = []
    for run in study.runs:
        mine = found[f"{run.strategy}/{run.seed}"]
        base = found[f"base/{run.seed}"]
        last = next(r for r in run.rounds if r.round == final)
        per_metric = {m: {t: v[m] for t, v in mine["per_task"].items()} for m in (ROUGE_L, LOGLIK)}
        rnd = RoundRecord(final, last.training_tasks, dict(mine["overall"]), last.picked_categories, per_metric,
                          last.cost)
        runs.append(RunRecord(run.strategy, run.seed, (rnd,), dict(base["overall"]), run.run_id))
    return Study(tuple(runs), study.metric)


def _report(label: str, study: Study, metric: str, final: int) -> list[str]:
    study = Study(study.runs, metric)
    reference = study.summary(REFERENCE, final)
    base = study.base()
    gain = None if reference is None or base is None else reference.mean - base.mean
    lines = []
    for strategy in study.strategies:
        c = study.comparison(strategy, final)
        if c is None or c.power.sd is None:
            continue
        relative = "n/c" if c.power.mde is None or not gain else f"{c.power.mde / gain:.2f}"
        share = "n/c" if c.split is None else f"{c.split.test_share:.0%}"
        mde = "n/c" if c.power.mde is None else f"{c.power.mde:.4g}"
        lines.append(f"| {label} | {strategy} | {c.difference.count} | {c.difference.mean:+.4g} | {c.power.sd:.4g} "
                     f"| {mde} | {share} | {'n/c' if gain is None else f'{gain:.4g}'} | {relative} |")
    return lines


def run(args: argparse.Namespace) -> None:
    from experiment.config import load_config

    config = load_config(args.config)
    study, runs = read_study(args.experiment, args.config, ROUGE_L)
    names = {(r.data.tags["strategy"], int(r.data.tags["seed"])): r.info.run_name for r in runs}
    final = max(rnd.round for run in study.runs for rnd in run.rounds)
    rows = ["| option | strategy | seeds | Δ | sd of Δ | MDE (80%) | test share | random's gain | MDE / gain |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows += _report(f"rougeL, {config.evaluation.max_instances_per_task} a task", study, ROUGE_L, final)
    rows += _report(f"loglik, {config.evaluation.max_instances_per_task} a task", study, LOGLIK, final)
    if not args.no_reevaluate:
        cache = args.cache or ROOT / "outputs" / f"variance-{args.experiment}.json"
        found: dict[str, Any] = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        todo = [(f"base/{s}", None, s) for s in study.seeds] + [
            (f"{run.strategy}/{run.seed}", run, run.seed) for run in study.runs]
        for key, run, seed in todo:
            if key in found:
                continue
            if run is None and not config.pool.test_tasks and found.get(f"base/{study.seeds[0]}"):
                found[key] = found[f"base/{study.seeds[0]}"]  # a fixed test split: the same base evaluation
                continue
            started = time.perf_counter()
            record = run or next(r for r in study.runs if r.seed == seed)
            found[key] = _reevaluate(args.config, record, -1 if run is None else final,
                                     "" if run is None else names[run.strategy, run.seed])
            print(f"re-evaluated {key}: {found[key]['instances']} instances in {time.perf_counter() - started:.0f} s",
                  flush=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(found, indent=1), encoding="utf-8")
        instances = statistics.fmean(v["instances"] for v in found.values())
        every = _with_all_instances(study, found, final)
        rows += _report(f"rougeL, every instance ({instances:.0f})", every, ROUGE_L, final)
        rows += _report(f"loglik, every instance ({instances:.0f})", every, LOGLIK, final)
    print(f"{args.experiment}: round {final}, {len(study.seeds)} seeds")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> None:
    """Bad input: one ``error:`` line and exit status 2."""
    bad_input_exits_2(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    main()
