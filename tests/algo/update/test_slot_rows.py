"""slot_rows.py: rows land in their slot's block in arrival order; dropped rows, rows with no slot and rows past the
width are masked out and never reach the layout's values."""
import torch

from sglang_esamp.algo.update.slot_rows import SlotRows


def test_rows_are_laid_out_by_slot_in_order():
    local = torch.tensor([1, 0, -1, 1, 0, 1])
    keep = torch.tensor([True, True, True, False, True, True])
    src = torch.arange(6, dtype=torch.float32).unsqueeze(1).repeat(1, 3) + 1     # row r holds r + 1
    src[3] = float("nan")                                                         # the dropped row
    rows = SlotRows(local, keep, slots=3, width=3)
    laid = rows(src)
    assert laid.shape == (3, 3, 3)
    assert laid[0, :, 0].tolist() == [2.0, 5.0, 0.0]                # slot 0: rows 1, 4, then padding
    assert laid[1, :, 0].tolist() == [1.0, 0.0, 6.0]                # slot 1: rows 0, (3 dropped: zero), 5
    assert laid[2].abs().sum() == 0                                 # slot 2 has no row
    assert torch.isfinite(laid).all()
    assert rows.mask.tolist() == [[1, 1, 0], [1, 0, 1], [0, 0, 0]]
    assert rows.count.tolist() == [2, 3, 0] and rows.kept.tolist() == [2, 2, 0]
    assert rows.rows_f.tolist() == [2.0, 2.0, 1.0]                  # no division by zero for an empty slot


def test_rows_past_the_width_are_discarded():
    rows = SlotRows(torch.tensor([0, 0, 0]), torch.ones(3, dtype=torch.bool), slots=1, width=2)
    laid = rows(torch.tensor([[1.0], [2.0], [3.0]]))
    assert laid[0, :, 0].tolist() == [1.0, 2.0] and rows.mask.tolist() == [[1, 1]]


def test_mean_is_over_kept_rows():
    rows = SlotRows(torch.tensor([0, 0, 1]), torch.tensor([True, False, True]), slots=2, width=2)
    per_row = torch.tensor([[4.0, 100.0], [6.0, 100.0]])
    assert rows.mean(per_row).tolist() == [4.0, 6.0]
