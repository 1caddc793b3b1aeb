"""Grouped distiller forward kernels vs the torch reference, under the Triton CPU interpreter.

Sampled grid over H (64..4096), width (64/80/384/512), R (1..256), slots, K, output LN and dtypes. The default
interpreter tiles are large (few interpreted programs); some cases force the GPU tiles, split-K and the unsorted
row order so those code paths run too.
"""
import pytest
import torch

from esamp_kernels import grouped_forward_triton as gft
from esamp_kernels.grouped_forward_torch import grouped_distiller_forward_torch
from kernels_testutil import assert_interpreted, make_bank

# Tolerance: |out - ref| <= COMPUTE[bank] * (rms(ref) + |ref|) + ROUND[x dtype] * |ref|.
# COMPUTE, the arithmetic difference before the final cast:
# - fp32 bank: the same fp32 products, only the order of the fp32 sums (over H, over the width) differs; the
#   residual stays fp32 in both. 2e-5 is ~170 ulp, ample for sums of <= 4096 terms (measured: < 1e-6).
# - bf16/fp16 bank: fp32 activations enter the dots as hi + lo 16-bit terms (~16 mantissa bits instead of 24;
#   under the interpreter hi is truncated, not rounded, so ~14). Errors of ~2^-14 per product, summed with random
#   signs, stay ~2^-14 relative to the dot; 2^-11 leaves 8x (measured: <= 1.6e-4 of rms(ref)).
# ROUND, the final cast to x's dtype: the reference rounds to nearest (<= 1/2 ulp), the interpreter's
# fp32->bf16 cast truncates (< 1 ulp; the GPU rounds to nearest), and a 1-ulp bf16 step is <= 2^-7 of the value:
# 1.5 ulp <= 2^-6 |v| for bf16, 2^-9 |v| for fp16, nothing for fp32.
COMPUTE = {torch.float32: 2e-5, torch.bfloat16: 2 ** -11, torch.float16: 2 ** -11}
ROUND = {torch.float32: 0.0, torch.bfloat16: 2 ** -6, torch.float16: 2 ** -9}


def assert_forward_close(out, ref, bank_dtype, x_dtype):
    out, ref = out.float(), ref.float()
    rms = ref.pow(2).mean().sqrt()
    bound = COMPUTE[bank_dtype] * (rms + ref.abs()) + ROUND[x_dtype] * ref.abs()
    worst = ((out - ref).abs() / bound).max().item()
    assert worst <= 1.0, f"error exceeds the stated tolerance by {worst:.2f}x"


def test_runs_in_the_interpreter():
    assert_interpreted(gft._gate_up_kernel)
    assert_interpreted(gft._down_kernel)
    assert_interpreted(gft._layer_norm_kernel)


def _check(x, slot_ids, bank, blocks, out_ln, **kw):
    assert gft.unsupported_reason(x, slot_ids, bank, blocks, out_ln) is None
    out = gft.grouped_distiller_forward_triton(x, slot_ids, bank, blocks, out_ln, **kw)
    ref = grouped_distiller_forward_torch(x, slot_ids, bank, blocks, out_ln)
    assert out.dtype == x.dtype and out.shape == x.shape
    bank_dtype = bank["blocks.0.up"].dtype if blocks else torch.float32
    assert_forward_close(out, ref, bank_dtype, x.dtype)
    # the blocks must have moved the residual, or the comparison above proves nothing
    if blocks and not out_ln:
        assert (ref.float() - x.float()).abs().mean() > 0.1 * x.float().abs().mean()
    return out


# (rows, hidden, width, blocks, out_ln, slots, bank dtype, x dtype)
GRID = [
    (1, 896, 384, 2, False, 1, torch.float32, torch.bfloat16),   # paper preset, Qwen-0.5B hidden, one row
    (64, 896, 64, 1, True, 8, torch.float32, torch.float32),     # tllm preset (rank 64 + LN), 8 groups
    (20, 1536, 384, 2, False, 5, torch.bfloat16, torch.bfloat16),  # Qwen-1.5B hidden, bf16 bank
    (256, 64, 64, 2, True, 3, torch.float32, torch.float32),      # largest batch, small hidden
    (3, 4096, 512, 1, False, 2, torch.float16, torch.float16),    # largest hidden and width
    (17, 200, 80, 2, True, 4, torch.float32, torch.float16),      # ragged sizes in every dimension
]


@pytest.mark.parametrize("rows,hidden,width,blocks,out_ln,slots,bank_dtype,x_dtype", GRID)
def test_grid(rows, hidden, width, blocks, out_ln, slots, bank_dtype, x_dtype):
    gen = torch.Generator().manual_seed(rows + hidden + width)
    bank = make_bank(slots, hidden, width, blocks, out_ln, bank_dtype, gen=gen)
    x = torch.randn(rows, hidden, generator=gen).to(x_dtype)
    slot_ids = torch.randint(0, slots, (rows,), generator=gen)
    _check(x, slot_ids, bank, blocks, out_ln)


@pytest.mark.parametrize("split_k,sort_rows", [(1, False), (4, True), (3, False)])
def test_gpu_tiles_split_k_and_row_order(split_k, sort_rows):
    """The GPU block sizes, split-K partial sums and interleaved slots (unsorted: many slots per tile)."""
    gen = torch.Generator().manual_seed(split_k)
    bank = make_bank(3, 200, 40, 2, True, torch.float32, gen=gen)
    x = torch.randn(19, 200, generator=gen)
    slot_ids = torch.arange(19) % 3  # every tile holds every slot
    _check(x, slot_ids, bank, 2, True, split_k=split_k, sort_rows=sort_rows, tiles=gft.GPU_TILES)


def test_unused_slots_are_never_read_and_strided_inputs():
    """Slots no row names hold NaN: any read of them would poison the output. x is a strided view, ids int32."""
    gen = torch.Generator().manual_seed(3)
    bank = make_bank(6, 128, 64, 2, True, torch.float32, gen=gen)
    for t in bank.values():
        t[[0, 2, 5]] = float("nan")
    x = torch.randn(40, 256, generator=gen)[:, ::2]
    slot_ids = torch.tensor([1, 3, 4] * 13 + [4], dtype=torch.int32)
    out = _check(x, slot_ids, bank, 2, True)
    assert torch.isfinite(out).all()


def test_single_row_per_slot_matches_single_distiller():
    """Each row alone with its own slot equals that slot's distiller run on that row (no cross-row mixing)."""
    gen = torch.Generator().manual_seed(5)
    bank = make_bank(3, 96, 64, 1, False, torch.float32, gen=gen)
    x = torch.randn(3, 96, generator=gen)
    out = gft.grouped_distiller_forward_triton(x, torch.tensor([2, 0, 1]), bank, 1, False)
    for r, s in enumerate([2, 0, 1]):
        alone = gft.grouped_distiller_forward_triton(x[r:r + 1], torch.tensor([s]), bank, 1, False)
        torch.testing.assert_close(out[r:r + 1], alone, rtol=2e-5, atol=2e-5)


def test_zero_blocks_layer_norm_only():
    gen = torch.Generator().manual_seed(9)
    bank = make_bank(2, 48, 16, 0, True, torch.float32, gen=gen)
    x = torch.randn(5, 48, generator=gen)
    _check(x, torch.tensor([0, 1, 1, 0, 1]), bank, 0, True)


def test_unsupported_reasons():
    gen = torch.Generator().manual_seed(0)
    bank = make_bank(2, 32, 16, 1, True, torch.float32, gen=gen)
    x, ids = torch.randn(3, 32), torch.zeros(3, dtype=torch.long)
    assert gft.unsupported_reason(x, ids, bank, 1, True) is None
    assert "lacks" in gft.unsupported_reason(x, ids, bank, 2, True)
    assert "float" in gft.unsupported_reason(x.double(), ids, bank, 1, True)
    assert "int32 or int64" in gft.unsupported_reason(x, ids.float(), bank, 1, True)
    assert "[S, H, W] with H = 40" in gft.unsupported_reason(torch.randn(3, 40), ids, bank, 1, True)
    assert "share one dtype" in gft.unsupported_reason(x, ids, {**bank, "blocks.0.down": bank["blocks.0.down"].half()},
                                                       1, True)
    grad_bank = {k: v.clone().requires_grad_(True) for k, v in bank.items()}
    assert "autograd" in gft.unsupported_reason(x, ids, grad_bank, 1, True)
    with torch.no_grad():
        assert gft.unsupported_reason(x, ids, grad_bank, 1, True) is None
