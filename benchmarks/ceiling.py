"""The machine's own ceiling: matmul throughput measured at a model's shapes, and the useful
FLOPs of the work a benchmark did, so that a benchmark can say what share of the ceiling
it reaches.

* :func:`linear_shapes`: every weight matrix the model multiplies by (``nn.Linear`` and
  GPT-2's ``Conv1D``), as ``(in, out) -> count``; the output layer is kept apart, since
  the training loss and the scorer need it at a few positions only.
* :func:`measured_peak`: the throughput of ``torch.nn.functional.linear`` at those shapes,
  with ``rows`` input rows (the tokens of a typical batch), in the given dtype, on the given
  device, with the threads torch has now: each shape timed ``repeats`` times (best kept),
  the result the FLOP-weighted rate of one pass through the model, ``sum(flops) /
  sum(time)``. On a GPU pass ``torch.bfloat16`` for the device's bf16 peak.
* :func:`training_flops`: ``6 x in x out`` per trained token and weight matrix (forward,
  input gradient, weight gradient; frozen matrices under LoRA: 4), the output layer only at
  the answer tokens. Attention's own score and mixing FLOPs are left out (small at these
  lengths), and so is everything the loss does not need (padding, prompt logits).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shapes:
    """The model's matmul shapes: the body's ``(in, out) -> count`` and the output layer's."""

    body: dict[tuple[int, int], int]
    head: tuple[int, int]

    @property
    def body_parameters(self) -> int:
        return sum(i * o * n for (i, o), n in self.body.items())


def linear_shapes(model: torch.nn.Module) -> Shapes:
    """The weight matrices of ``model`` by shape; the output layer apart."""
    head = model.get_output_embeddings()
    body: Counter[tuple[int, int]] = Counter()
    for module in model.modules():
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            body[(module.in_features, module.out_features)] += 1
        elif type(module).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
            body[tuple(module.weight.shape)] += 1
    return Shapes(dict(body), (head.in_features, head.out_features))


def measured_peak(shapes: Shapes, rows: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu", repeats: int = 5, head_rows: int | None = None) -> float:
    """FLOP/s of ``linear`` at the model's shapes (``rows`` input rows; the output layer at
    ``head_rows``, default ``rows``), weighted as one pass through the model uses them."""
    device = torch.device(device)
    work = [(shape, count, rows) for shape, count in shapes.body.items()]
    work.append((shapes.head, 1, head_rows or rows))
    total_flops = total_time = 0.0
    for (fan_in, fan_out), count, m in work:
        x = torch.randn(m, fan_in, dtype=dtype, device=device)
        w = torch.randn(fan_out, fan_in, dtype=dtype, device=device)
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            torch.nn.functional.linear(x, w)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - started)
        total_flops += 2.0 * m * fan_in * fan_out * count
        total_time += best * count
    return total_flops / total_time


def training_flops(shapes: Shapes, tokens: int, answer_tokens: int, full: bool = True) -> float:
    """The useful FLOPs of training on ``tokens`` real tokens with ``answer_tokens`` labelled
    ones (``full``: every weight trained; else frozen weights, no weight gradients)."""
    per_weight = 6.0 if full else 4.0
    fan_in, fan_out = shapes.head
    return per_weight * (shapes.body_parameters * tokens + fan_in * fan_out * answer_tokens)

