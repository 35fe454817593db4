#!/usr/bin/env python
"""Check in a real browser what a user sees of tracked runs: the MLflow UI and the ZenML dashboard.

    python benchmarks/ui_check.py --mlflow http://127.0.0.1:5000 --experiment activeit-smoke \
        [--zenml http://127.0.0.1:8237] [--out outputs/ui]

Headless Chromium (Debian's ``chromium``) is driven over the DevTools protocol, so that a
page is read once it has rendered (charts, the pipeline DAG) rather than after a fixed
time. Checked, with a screenshot of each page in ``--out``:

* MLflow, experiment page (model-training view): every run's name;
* MLflow, the newest pipeline run's metrics page: the per-round metrics, also against
  training tasks (``by_training_tasks/*``);
* MLflow, that run's ``round_1/task_map.png`` artifact: the image shown;
* ZenML (with ``--zenml``), the pipeline run's page: its DAG with round-named steps, and
  the score table's visualizations (the task-map image) of ``uncertainty_scorer_round_1``.

Exit code 0 when every check passes, 1 otherwise (each failure is printed).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tracking.schema import BY_TASKS_PREFIX, MODEL_TRAINING_VIEW as ML_VIEW  # noqa: E402

WIDTH, HEIGHT = 1600, 1100
#: Text the run's metrics page must show: per-round charts and the by-training-tasks section.
EXPECTED_CHARTS = ("rougeL", "exact_match", "num_training_tasks", "train_loss", BY_TASKS_PREFIX.rstrip("/"))


def chromium_binary() -> str | None:
    """Debian's ``chromium`` (or Google Chrome) on the PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class Page:
    """One browser tab over the DevTools protocol: navigate, wait for text, read, screenshot."""

    def __init__(self, websocket_url: str) -> None:
        from websockets.sync.client import connect

        self._stack = ExitStack()
        self._ws = self._stack.enter_context(connect(websocket_url, max_size=None, open_timeout=30))
        self._next = 0
        self.call("Page.enable")
        self.viewport(WIDTH, HEIGHT)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        self._next += 1
        self._ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=120))
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def viewport(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)[
            "result"].get("value")

    def dom(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def open(self, url: str, expect: Sequence[str], timeout: float = 90.0) -> tuple[str, list[str]]:
        """Load ``url`` and wait until the rendered DOM holds every string of ``expect``;
        returns the DOM and the strings still missing at the timeout."""
        self.call("Page.navigate", url=url)
        return self.wait_for(expect, timeout)

    def wait_for(self, expect: Sequence[str], timeout: float = 90.0) -> tuple[str, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(1.0)
            dom = self.dom()
            missing = [text for text in expect if text not in dom]
            if not missing or time.monotonic() > deadline:
                time.sleep(1.0 if not missing else 0)  # let images and charts paint
                return self.dom(), missing

    def click(self, selector: str, text: str | None = None) -> bool:
        """Click (with the mouse, as React listens) the last element matching the CSS
        ``selector`` (and holding ``text``); False when there is none."""
        found = self.evaluate(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})].reverse()"
            f".find(e => {json.dumps(text)} === null || e.textContent.trim() === {json.dumps(text)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'}); const b = e.getBoundingClientRect();"
            " return [b.x + b.width / 2, b.y + b.height / 2]; })()"
        )
        if not found:
            return False
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=found[0], y=found[1], button="left", clickCount=1)
        return True

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._stack.close()


@contextmanager
def browser() -> Iterator[Page]:
    """A headless Chromium with one open tab; closed afterwards."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium on the PATH (Debian: apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="activeit-chromium-"))
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    page = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            tabs = [t for t in json.load(response) if t.get("type") == "page"]
        page = Page(tabs[0]["webSocketDebuggerUrl"])
        yield page
    finally:
        if page is not None:
            page.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Report:
    """What was checked: screenshots written and failures, one line each."""

    screenshots: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, page: Page, name: str, url: str | None, expect: Sequence[str], out: Path,
              height: int = HEIGHT) -> str:
        """Open ``url`` (None: stay on the page) and check that ``expect`` is rendered."""
        page.viewport(WIDTH, height)
        dom, missing = page.open(url, expect) if url else page.wait_for(expect)
        url = url or page.evaluate("location.href")
        self.screenshots.append(page.screenshot(out / f"{name}.png"))
        (out / f"{name}.html").write_text(dom, encoding="utf-8")
        for text in missing:
            self.failures.append(f"{name}: '{text}' not in the rendered page {url}")
        print(f"{'ok  ' if not missing else 'FAIL'} {name}: {url}")
        return dom


def _get_json(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def check_mlflow(page: Page, report: Report, url: str, experiment: str, out: Path) -> str:
    """The experiment's runs table, the newest pipeline run's metrics and its task map;
    returns that run's name (the ZenML pipeline run of the same name)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        report.failures.append(f"MLflow experiment '{experiment}' not found at {url}")
        return ""
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    names = [run.info.run_name for run in runs]
    base = f"{url.rstrip('/')}/#/experiments/{found.experiment_id}"
    report.check(page, "mlflow_experiment", f"{base}?{ML_VIEW}", names, out)
    pipeline_runs = [run for run in runs if "strategy" in run.data.tags]
    if not pipeline_runs:
        report.failures.append(f"MLflow experiment '{experiment}' has no pipeline run")
        return ""
    run = pipeline_runs[0]
    run_url = f"{base}/runs/{run.info.run_id}"
    report.check(page, "mlflow_run_metrics", f"{run_url}/model-metrics?{ML_VIEW}", [run.info.run_name, *EXPECTED_CHARTS],
                 out, height=3200)
    report.check(page, "mlflow_task_map", f"{run_url}/artifacts/round_1/task_map.png?{ML_VIEW}",
                 ['alt="round_1/task_map.png"', 'src="blob:'], out)
    return run.info.run_name


def check_zenml(page: Page, report: Report, url: str, run_name: str, out: Path) -> None:
    """The pipeline run's DAG (round-named steps) and a step's artifact visualizations."""
    api = f"{url.rstrip('/')}/api/v1"
    if _get_json(f"{api}/info").get("auth_scheme") == "NO_AUTH":
        # A local server's first visit asks for the user's name in a form: answer it once.
        _get_json(f"{api}/current-user", "PUT", {"email_opted_in": False,
                                                  "user_metadata": {"finished_onboarding_survey": True}})
    found = _get_json(f"{api}/runs?name={urllib.request.quote(run_name)}")["items"]
    if not found:
        report.failures.append(f"ZenML run '{run_name}' not found at {url}")
        return
    run_url = f"{url.rstrip('/')}/projects/default/runs/{found[0]['id']}"
    scores = 'rf__node-uncertainty_scorer_round_1/outputs/step_output/scores_round_1'
    page.open(run_url, ['aria-label="Fit view"', "rf__node-step/pool_loader"])
    page.click('[aria-label="Fit view"]')  # the whole DAG: every node rendered
    steps = [f"rf__node-step/{name}" for name in (
        "pool_loader", "base_evaluator", "perturber_round_1", "uncertainty_scorer_round_1", "selector_round_2",
        "accelerate_finetuner_round_2", "rouge_evaluator_round_2", "tracker_round_2")]
    report.check(page, "zenml_run", None, [run_name, *steps, scores], out)
    # The score table of round 1: its artifact sheet, Visualization tab (task map PNG, table).
    if page.click(f'[data-testid="{scores}"]') and page.wait_for(["ScoreTableMaterializer"], 30)[1] == []:
        page.click('[role="tab"]', "Visualization")
        # Pick the task map among the visualizations, then confirm the dashboard's preview prompt.
        if page.wait_for(["summary.md"], 30)[1] == [] and page.click("button", "summary.md"):
            page.wait_for(["task_map.png"], 15)
            page.click('[role="option"]', "task_map.png") or page.click("div,span,li", "task_map.png")
        page.wait_for(["Load Preview"], 15)
        page.click("button", "Load Preview")
    report.check(page, "zenml_task_map", None, ["scores_round_1", "task_map.png", '<img alt="Visualization for artifact" src="data:image/png'], out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlflow", required=True, help="MLflow tracking server URL")
    parser.add_argument("--experiment", required=True, help="MLflow experiment of the runs")
    parser.add_argument("--zenml", help="ZenML server (dashboard) URL holding the same pipeline runs")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ui", help="screenshots and DOMs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report()
    with browser() as page:
        run_name = check_mlflow(page, report, args.mlflow, args.experiment, args.out)
        if args.zenml and run_name:
            check_zenml(page, report, args.zenml, run_name, args.out)
    print(f"Screenshots in {args.out}: {', '.join(p.name for p in report.screenshots)}")
    for failure in report.failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
