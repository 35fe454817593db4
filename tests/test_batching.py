"""The one batch planner and its orders, pinned on small hand-made sizes."""

from __future__ import annotations

from activeit.models.batching import longest_first, plan_batches, prefix_grouped_orders


def test_token_budget_counts_rows_times_widest_plus_longest() -> None:
    lengths, widths = [5, 4, 4, 3, 1], [0, 2, 0, 0, 0]
    # [0, 1]: 2 * (2 + 5) = 14 <= 14; adding 2 costs 3 * 7 = 21
    assert plan_batches(range(5), lengths, 14, widths=widths) == [[0, 1], [2, 3, 4]]
    assert plan_batches(range(5), lengths, 1) == [[0], [1], [2], [3], [4]]  # over budget: alone
    assert plan_batches(range(5), lengths, max_rows=2) == [[0, 1], [2, 3], [4]]


def test_logit_budget_sums_positions() -> None:
    assert plan_batches(range(4), [1] * 4, logits=[2, 2, 3, 1], logit_budget=4) == [[0, 1], [2, 3]]


def test_orders() -> None:
    assert longest_first([2, 5, 2, 7]) == [3, 1, 0, 2]
    assert longest_first({4: 1, 9: 3}, [4, 9]) == [9, 4]
    prefixes = [(1,), (), (2, 2), (1,), ()]
    lengths = [3, 9, 1, 8, 2]
    # prefix (1,) holds the longest row: its rows first; rows without a prefix apart
    assert prefix_grouped_orders(prefixes, lengths) == [[3, 0, 2], [1, 4]]
