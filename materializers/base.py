"""Shared file handling of the project's materializers (any artifact store, not pickle)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

SUMMARY_FILE = "summary.md"


class FileMaterializer(BaseMaterializer):
    """Base class: small helpers to read and write named files under ``self.uri``."""

    SKIP_REGISTRATION: ClassVar[bool] = True
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def path(self, name: str) -> str:
        return os.path.join(self.uri, name)

    def write_text(self, name: str, text: str) -> str:
        with self.artifact_store.open(self.path(name), "w") as handle:
            handle.write(text)
        return self.path(name)

    def read_text(self, name: str) -> str:
        with self.artifact_store.open(self.path(name), "r") as handle:
            return handle.read()

    def write_json(self, name: str, data: Any) -> str:
        return self.write_text(name, json.dumps(data, ensure_ascii=False, indent=1))

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_text(name))

    def upload(self, local: Path, name: str | None = None) -> str:
        """Copy a local file into the artifact folder."""
        target = self.path(name or local.name)
        with open(local, "rb") as source, self.artifact_store.open(target, "wb") as out:
            shutil.copyfileobj(source, out, length=16 << 20)
        return target

    def download(self, name: str, local: Path) -> Path:
        """Copy a file of the artifact folder to a local path."""
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.artifact_store.open(self.path(name), "rb") as source, open(local, "wb") as out:
            shutil.copyfileobj(source, out, length=16 << 20)
        return local

    def local_copy(self, names: list[str]) -> Path:
        """The artifact folder itself when the store is local, else a temporary copy of
        ``names`` (removed after the step)."""
        if os.path.isdir(self.uri):
            return Path(self.uri)
        with self.get_temporary_directory(delete_at_exit=False) as tmp:
            for name in names:
                self.download(name, Path(tmp) / name)
            return Path(tmp)

    def markdown(self, text: str) -> dict[str, VisualizationType]:
        """Save ``text`` as the artifact's markdown summary visualization."""
        return {self.write_text(SUMMARY_FILE, text): VisualizationType.MARKDOWN}


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A small markdown table (floats to 4 decimals)."""

    def cell(value: Any) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
