"""Import this before anything that imports ZenML or MLflow: a private ZenML config (and
so a private SQLite store, artifact store and MLflow database) per test process, which
keeps parallel pytest-xdist workers and the user's own ZenML set-up apart."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if "zenml" in sys.modules and not os.environ.get("ACTIVEIT_ZENML_ISOLATED"):
    raise RuntimeError("zenml was imported before tests/zenml_isolation.py: import it first")

if not os.environ.get("ACTIVEIT_ZENML_ISOLATED"):
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    ROOT = Path(tempfile.mkdtemp(prefix=f"activeit-zenml-{_worker}-"))
    os.environ.update(
        ZENML_CONFIG_PATH=str(ROOT / "zenml"),
        ZENML_ANALYTICS_OPT_IN="false",
        ZENML_LOGGING_COLORS_DISABLED="true",
        ZENML_ENABLE_RICH_TRACEBACK="false",
        ACTIVEIT_ZENML_ISOLATED=str(ROOT),
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("ZENML_ACTIVE_STACK_ID", None)
ROOT = Path(os.environ["ACTIVEIT_ZENML_ISOLATED"])

# Steps and materializers resolve against the repository root, whatever started Python
# (pytest, an xdist worker): see pipelines.stack.use_repo_source_root.
from pipelines.stack import use_repo_source_root  # noqa: E402

use_repo_source_root()
