"""ModelFolder <-> the safetensors folder itself, file for file (no archive, no pickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType

from materializers.artifacts import ModelFolder
from materializers.base import FileMaterializer

INFO_FILE = "model_folder.json"


class ModelFolderMaterializer(FileMaterializer):
    """Copies the model's files into the artifact store (nothing to copy when a step wrote
    them there directly); a local store's model loads in place, a remote one is copied to
    a temporary folder first."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (ModelFolder,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def load(self, data_type: type[Any]) -> ModelFolder:
        info = self.read_json(INFO_FILE)
        folder = self.local_copy(info["files"])
        return ModelFolder(path=str(folder), base_model=info["base_model"], round=info["round"])

    def save(self, data: ModelFolder) -> None:
        source = Path(data.path)
        files = sorted(p.name for p in source.iterdir() if p.is_file())
        if not (os.path.isdir(self.uri) and source.resolve() == Path(self.uri).resolve()):
            for name in files:  # written elsewhere (a remote store): copy it over
                self.upload(source / name)
        self.write_json(INFO_FILE, {"base_model": data.base_model, "round": data.round, "files": files})

    def extract_metadata(self, data: ModelFolder) -> dict[str, Any]:
        files = [p for p in Path(data.path).iterdir() if p.is_file()]
        return {
            "base_model": data.base_model,
            "round": data.round,
            "files": len(files),
            "size_mb": round(sum(os.path.getsize(p) for p in files) / 2**20, 2),
        }

    def save_visualizations(self, data: ModelFolder) -> dict[str, VisualizationType]:
        files = sorted(p.name for p in Path(data.path).iterdir() if p.is_file())
        return self.markdown(
            f"# Model of round {data.round}\n\nFine-tuned from `{data.base_model}`.\n\n"
            + "".join(f"- `{name}`\n" for name in files)
        )
