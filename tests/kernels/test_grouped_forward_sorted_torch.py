"""The sync-free torch grouped forward (rows sorted by slot, one grouped matmul per weight) against the per-slot
torch reference: same rows out, for aligned shapes (``torch._grouped_mm``) and unaligned ones (the masked
fallback), empty and unused slots, any row order, and no tensor value read back to the host."""
import pytest
import torch

from esamp_kernels import ops
from esamp_kernels.grouped_forward_torch import (grouped_distiller_forward_sorted_torch,
                                                 grouped_distiller_forward_torch)
from kernels_testutil import make_bank
from tests.host_reads import no_host_reads


@pytest.mark.parametrize("hidden,width,blocks,out_ln", [(64, 32, 2, False), (64, 384, 1, True), (18, 6, 2, True)],
                         ids=["aligned", "paper_width_ln", "unaligned"])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_sorted_forward_matches_the_per_slot_reference(hidden, width, blocks, out_ln, x_dtype):
    gen = torch.Generator().manual_seed(hidden + width)
    bank = make_bank(5, hidden, width, blocks, out_ln, torch.float32, gen=gen)
    x = torch.randn(11, hidden, generator=gen).to(x_dtype)
    slots = torch.tensor([4, 0, 4, 1, 1, 0, 4, 4, 1, 0, 4])          # slots 2 and 3 unused, rows interleaved
    with no_host_reads():
        out = grouped_distiller_forward_sorted_torch(x, slots, bank, blocks, out_ln)
    ref = grouped_distiller_forward_torch(x, slots, bank, blocks, out_ln)
    assert out.dtype == x_dtype
    tol = 2e-5 if x_dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)


def test_the_dispatch_takes_the_sorted_path_when_asked_for_no_host_read():
    gen = torch.Generator().manual_seed(0)
    bank = make_bank(3, 16, 8, 1, False, torch.float32, gen=gen)
    x, slots = torch.randn(4, 16, generator=gen), torch.tensor([2, 0, 2, 2])
    with no_host_reads():
        out = ops.grouped_distiller_forward(x, slots, bank, 1, False, sync_free=True)
    torch.testing.assert_close(out, grouped_distiller_forward_torch(x, slots, bank, 1, False))
    with pytest.raises(AssertionError, match="host read"):     # the per-slot reference reads the slot ids
        with no_host_reads():
            ops.grouped_distiller_forward(x, slots, bank, 1, False)
