"""The shared-prefix engine the scorer and the evaluator run on: prefix caches, scored greedy decoding, teacher forcing."""
