"""Token-exact tests of the Tk-Instruct prompt with the real SmolLM2 and GPT-2 tokenizers."""

from __future__ import annotations

from typing import Any

import pytest

from activeit.data.prompts import OUTPUT_HEADER, PromptFormatter, definition_text, render_tk_prompt, with_end_punctuation
from activeit.data.tasks import Example, Instance, Task

DEFINITION = "Answer the question"
EXAMPLES = (Example("What is 2+2?", "4"), Example("Capital of France", "Paris"))
INPUT = "Is the sky blue?"
RAW = (
    "Definition: Answer the question.\n\n"
    " Positive Example 1 -\nInput: What is 2+2?\n Output: 4.\n\n"
    " Positive Example 2 -\nInput: Capital of France.\n Output: Paris.\n\n"
    "Now complete the following example -\nInput: Is the sky blue?\nOutput:"
)
SMOLLM2_HEAD = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\n"
)
SMOLLM2_TAIL = "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(params=["smollm2-chat", "smollm2-raw", "gpt2-raw"])
def formatter_factory(request: pytest.FixtureRequest, smollm2_tokenizer: Any, gpt2_tok: Any) -> Any:
    """``make(max_source_length)`` -> a formatter of one tokenizer/wrapping combination."""
    tokenizer = gpt2_tok if request.param.startswith("gpt2") else smollm2_tokenizer
    chat = request.param.endswith("chat")
    return lambda limit=1024: PromptFormatter(tokenizer, limit, chat=chat)


def test_raw_text_is_exact() -> None:
    assert render_tk_prompt(DEFINITION, EXAMPLES, INPUT) == RAW


def test_chat_text_wraps_the_same_content(smollm2_tokenizer: Any, gpt2_tok: Any) -> None:
    chat = PromptFormatter(smollm2_tokenizer)  # chat=None: a causal model with a template
    assert chat.chat
    assert chat.render(DEFINITION, EXAMPLES, INPUT) == SMOLLM2_HEAD + RAW + SMOLLM2_TAIL
    assert not PromptFormatter(gpt2_tok).chat  # no template: raw
    assert not PromptFormatter(smollm2_tokenizer, seq2seq=True).chat
    assert PromptFormatter(smollm2_tokenizer, chat=False).render(DEFINITION, EXAMPLES, INPUT) == RAW


@pytest.mark.parametrize(
    "definition, examples, text",
    [
        (DEFINITION, EXAMPLES, INPUT),
        ("Translate!", (Example("  café au lait  ", "coffee with milk"),), "naïve\nmulti-line input"),
        ("Count (in digits)", (), "1 2 3 4"),
        ("  Spaces around  ", EXAMPLES[::-1], "ends with a colon:"),
    ],
)
def test_ids_equal_tokenizing_the_rendered_text(formatter_factory: Any, definition: str, examples: tuple[Example, ...], text: str) -> None:
    formatter = formatter_factory()
    encoded = formatter.encode(definition, examples, text)
    assert encoded.ids == formatter.tokenizer(formatter.render(definition, examples, text))["input_ids"]
    assert encoded.num_examples == len(examples)


def test_prefix_is_shared_by_the_instances_of_a_task(formatter_factory: Any) -> None:
    formatter = formatter_factory()
    task = Task("t", DEFINITION, EXAMPLES, (Instance("1", "First?", ("a",)), Instance("2", "Second one", ("b",))))
    first, second = (formatter.encode_instance(task, i) for i in task.instances)
    assert first.prefix_ids == second.prefix_ids
    assert first.suffix_ids != second.suffix_ids
    assert second.ids == formatter.tokenizer(formatter.render(DEFINITION, EXAMPLES, "Second one"))["input_ids"]


def test_period_only_without_end_punctuation() -> None:
    assert with_end_punctuation("Hello") == "Hello."
    assert with_end_punctuation("  Hello  ") == "Hello."
    for text in ("Really?", "Stop!", "Done.", "a list:", "(aside)", 'he said "hi"'):
        assert with_end_punctuation(text) == text
    assert definition_text("Why?") == "Definition: Why?"
    rendered = render_tk_prompt("Is it?", (Example("x!", "y."),), "z?")
    assert "Is it?.\n" not in rendered and "Input: x!\n Output: y.\n" in rendered
    assert rendered.endswith("Input: z?\nOutput:")


def test_demonstrations_are_dropped_when_they_do_not_fit(formatter_factory: Any) -> None:
    unlimited = formatter_factory(100_000)
    sizes = [len(unlimited.encode(DEFINITION, EXAMPLES[:n], INPUT)) for n in range(3)]
    assert sizes[0] < sizes[1] < sizes[2]
    for limit, kept in ((sizes[2], 2), (sizes[2] - 1, 1), (sizes[1], 1), (sizes[1] - 1, 0), (sizes[0], 0)):
        formatter = formatter_factory(limit)
        encoded = formatter.encode(DEFINITION, EXAMPLES, INPUT)
        assert encoded.num_examples == kept
        assert len(encoded) == sizes[kept] <= limit
        assert encoded.ids == formatter.tokenizer(formatter.render(DEFINITION, EXAMPLES[:kept], INPUT))["input_ids"]


def test_the_instance_input_is_truncated_last(formatter_factory: Any) -> None:
    long_input = " ".join(f"w{i}" for i in range(300))
    unlimited = formatter_factory(100_000)
    short = unlimited.encode(DEFINITION, (), "w0")
    limit = len(short) + 40
    formatter = formatter_factory(limit)
    encoded = formatter.encode(DEFINITION, EXAMPLES, long_input)
    assert encoded.num_examples == 0  # demonstrations go first
    assert len(encoded) == limit
    assert encoded.prefix_ids == short.prefix_ids  # the definition is intact
    tokenizer = formatter.tokenizer
    text = tokenizer.decode(encoded.ids)
    assert "Input: w0 w1 w2" in text and "w299" not in text  # the input keeps its beginning
    tail = tokenizer(OUTPUT_HEADER + formatter.tail, add_special_tokens=False)["input_ids"]
    assert encoded.ids[-len(tail) :] == tail  # "Output:" (and the chat tail) survive


def test_encode_target_ends_in_eos_with_a_space_only_for_raw_causal(smollm2_tokenizer: Any, gpt2_tok: Any) -> None:
    cases = [
        (PromptFormatter(gpt2_tok), " Paris"),
        (PromptFormatter(smollm2_tokenizer, chat=False), " Paris"),
        (PromptFormatter(smollm2_tokenizer, chat=True), "Paris"),
        (PromptFormatter(gpt2_tok, seq2seq=True), "Paris"),
    ]
    for formatter, text in cases:
        ids = formatter.encode_target("  Paris ")
        assert ids[-1] == formatter.tokenizer.eos_token_id
        assert ids[:-1] == formatter.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert formatter.tokenizer.decode(ids[:-1]) == text
