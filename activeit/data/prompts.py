"""Prompt rendering: the Tk-Instruct "definition + 2 positive examples" format.

The raw text follows docs/METHOD.md ("The prompt") exactly::

    Definition: <definition>

     Positive Example 1 -
    Input: <input>
     Output: <output>

    ...

    Now complete the following example -
    Input: <instance input>
    Output:

A "." is appended to a field that does not end in punctuation. Chat models get the same
content wrapped in their chat template (see :class:`PromptFormatter`).

Token ids are built from two separately tokenized segments: a *prefix* (chat head,
definition, demonstrations) shared by every instance of a task under one prompt, and a
*suffix* (the instance and the chat tail). The prefix always ends in a non-space
character and the suffix starts with the blank line, so for byte-level BPE tokenizers
(GPT-2, Llama-3, SmolLM2) the concatenation equals tokenizing the whole text at once.
Every part of the project (scoring, training, evaluation) uses the same ids, and the
scorer can compute a prefix once and reuse it for all instances.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from activeit.data.tasks import Example, Instance, Task

_SENTINEL = "\u2063ACTIVEIT_CONTENT\u2063"
INSTANCE_HEADER = "\n\nNow complete the following example -\nInput:"
OUTPUT_HEADER = "\nOutput:"


def with_end_punctuation(text: str) -> str:
    """Strip ``text`` and append "." unless it already ends in punctuation."""
    text = text.strip()
    return text if text and text[-1] in string.punctuation else text + "."


def definition_text(definition: str) -> str:
    return "Definition: " + with_end_punctuation(definition)


def example_text(number: int, example: Example) -> str:
    """One positive demonstration, preceded by its blank line."""
    return (
        f"\n\n Positive Example {number} -\n"
        f"Input: {with_end_punctuation(example.input)}\n"
        f" Output: {with_end_punctuation(example.output)}"
    )


def render_tk_prompt(
    definition: str, examples: Sequence[Example], instance_input: str
) -> str:
    """The raw Tk-Instruct prompt text (no truncation, no chat wrapping)."""
    demos = "".join(example_text(i + 1, e) for i, e in enumerate(examples))
    return (
        definition_text(definition)
        + demos
        + INSTANCE_HEADER
        + " "
        + with_end_punctuation(instance_input)
        + OUTPUT_HEADER
    )


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt as token ids: a shared prefix and an instance-specific suffix."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    num_examples: int

    @property
    def ids(self) -> list[int]:
        return [*self.prefix_ids, *self.suffix_ids]

    def __len__(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


def _special_tokens_around(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special ids the tokenizer puts before and after a text (BOS, T5's EOS...)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start]), tuple(full[start + len(plain) :])
    return (), ()


class PromptFormatter:
    """Turns (definition, demonstrations, instance) into model input ids.

    ``chat=None`` wraps the content in the tokenizer's chat template when it has one and
    the model is causal (instruction-tuned chat models answer with filler on the raw
    format); base models and seq2seq models get the raw format.
    Demonstrations that would push the source past ``max_source_length`` are left out
    (first the later ones, as in the reference collator); if the source is still too
    long, the instance input is truncated; the definition is cut only as a last resort.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_source_length: int = 1024,
        chat: bool | None = None,
        num_examples: int = 2,
        seq2seq: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.num_examples = num_examples
        self.seq2seq = seq2seq
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.chat = (has_template and not seq2seq) if chat is None else chat
        if self.chat and not has_template:
            raise ValueError("chat=True needs a tokenizer with a chat_template")
        self.head, self.tail = self._chat_wrapping() if self.chat else ("", "")
        self.lead_specials, self.trail_specials = _special_tokens_around(tokenizer)
        self._encode_cached = lru_cache(maxsize=4096)(self._encode_uncached)

    @classmethod
    def for_model(cls, loaded: Any, max_source_length: int = 1024, chat: bool | None = None) -> PromptFormatter:
        """The formatter for a :class:`activeit.models.loading.LoadedModel`."""
        return cls(loaded.tokenizer, max_source_length, chat=chat, seq2seq=loaded.is_seq2seq)

    def _chat_wrapping(self) -> tuple[str, str]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}],
            tokenize=False,
            add_generation_prompt=True,
        )
        head, _, tail = text.partition(_SENTINEL)
        return head, tail

    def _ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return self._ids(text)

    def render(
        self, definition: str, examples: Sequence[Example], instance_input: str
    ) -> str:
        """The prompt text that :meth:`encode` encodes, chat-wrapped when ``chat``.

        The same demonstrations as :meth:`encode` (at most ``num_examples``, those that
        fit); the text is not truncated.
        """
        shown = self.encode(definition, examples, instance_input).num_examples
        return self.head + render_tk_prompt(definition, examples[:shown], instance_input) + self.tail

    def encode(
        self, definition: str, examples: Sequence[Example], instance_input: str
    ) -> EncodedPrompt:
        """Token ids of the prompt, fitted into ``max_source_length``."""
        limit = self.max_source_length
        lead = self._encode_cached(INSTANCE_HEADER)
        body = self._ids(" " + with_end_punctuation(instance_input))
        trail = self._encode_cached(OUTPUT_HEADER + self.tail) + self.trail_specials
        fixed = len(lead) + len(trail)

        prefix_text = self.head + definition_text(definition)
        prefix = self.lead_specials + self._encode_cached(prefix_text)
        used = 0
        for number, example in enumerate(examples[: self.num_examples], start=1):
            candidate_text = prefix_text + example_text(number, example)
            candidate = self.lead_specials + self._encode_cached(candidate_text)
            if len(candidate) + fixed + len(body) > limit:
                break
            prefix_text, prefix, used = candidate_text, candidate, number

        room = limit - len(prefix) - fixed
        if room < len(body):
            keep_body = max(room, min(len(body), limit // 4))
            body = body[: max(keep_body, 0)]
            room = limit - fixed - len(body)
            if len(prefix) > room:
                prefix = prefix[: max(room, 0)]
        return EncodedPrompt(prefix, lead + body + trail, used)

    def shared_split(self, prompt: EncodedPrompt) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(prefix, suffix)`` ids for prefix caching: the instance header, the same ids in
        every suffix, joins the prefix shared by a task's instances (the suffix keeps at least
        one token)."""
        header = self._encode_cached(INSTANCE_HEADER)
        prefix, suffix = prompt.prefix_ids, prompt.suffix_ids
        if suffix[: len(header)] == header and len(suffix) > len(header):
            return prefix + suffix[: len(header)], suffix[len(header) :]
        return prefix, suffix

    def encode_answer_only(self) -> EncodedPrompt:
        """The prompt with no definition, demonstration or input: the answer marker ("Output:")
        alone, chat-wrapped when ``chat`` (the context of IFD's direct answer loss)."""
        marker = self._encode_cached(self.head + OUTPUT_HEADER.lstrip("\n") + self.tail) + self.trail_specials
        return EncodedPrompt(self.lead_specials, marker, 0)

    def encode_instance(self, task: Task, instance: Instance) -> EncodedPrompt:
        """The unperturbed prompt of ``instance`` under its task."""
        return self.encode(task.definition, task.positive_examples, instance.input)

    def encode_target(self, output: str) -> list[int]:
        """Target ids of a reference output, ending in the EOS token.

        Raw causal prompts end in "Output:", so the answer starts with a space; chat and
        seq2seq targets do not.
        """
        text = output.strip()
        if not self.chat and not self.seq2seq:
            text = " " + text
        eos = self.tokenizer.eos_token_id
        return [*self._ids(text), eos]
