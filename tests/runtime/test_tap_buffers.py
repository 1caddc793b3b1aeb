"""The static tap buffers (runtime/tap_buffers.py): rows read back, stale or missing writes caught by the stamps."""
import torch

from sglang_esamp.runtime.tap_buffers import TapBuffers


def write_step(buf, h_src, h_tgt, positions, skip=()):
    for role, h in (("source", h_src), ("target", h_tgt)):
        if role not in skip:
            buf.write(role, h, positions)


def test_the_plan_rows_come_back_from_the_whole_batch():
    buf = TapBuffers(hidden=4, dtype=torch.float32, device="cpu", rows=8)
    src, tgt, pos = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([10, 3, 7, 7, 20])
    write_step(buf, src, tgt, pos)
    rows = torch.tensor([1, 4])
    got = buf.read(rows, pos[rows], batch_size=5)
    assert got is not None
    assert torch.equal(got[0], src[rows]) and torch.equal(got[1], tgt[rows])
    assert buf.read(rows, pos[rows], batch_size=5) is None      # read once: the stamps are invalidated


def test_a_tap_that_did_not_write_this_step_is_a_miss_not_stale_rows():
    buf = TapBuffers(hidden=4, dtype=torch.float32, device="cpu", rows=8)
    pos = torch.tensor([5, 9])
    write_step(buf, torch.randn(2, 4), torch.randn(2, 4), pos)
    assert buf.read(torch.tensor([0, 1]), pos, 2) is not None
    write_step(buf, torch.randn(2, 4), torch.randn(2, 4), pos + 1, skip=("source",))   # next step, source missed
    assert buf.read(torch.tensor([0, 1]), pos + 1, 2) is None
    # a stamp of an older step at the same rows is not this step's either (without the read's invalidation)
    buf.write("source", torch.randn(2, 4), pos)
    buf.write("target", torch.randn(2, 4), pos + 1)
    assert buf.read(torch.tensor([0, 1]), pos + 1, 2) is None


def test_buffers_grow_for_a_larger_eager_batch_and_keep_their_dtype():
    buf = TapBuffers(hidden=3, dtype=torch.bfloat16, device="cpu", rows=2)
    src, tgt, pos = torch.randn(6, 3), torch.randn(6, 3), torch.arange(6)
    write_step(buf, src, tgt, pos)
    assert buf.rows >= 6 and buf.h["source"].dtype == torch.bfloat16
    got = buf.read(torch.tensor([5]), pos[5:], 6)
    assert torch.equal(got[0], src[5:].to(torch.bfloat16))


def test_a_batch_larger_than_the_buffers_is_a_miss():
    buf = TapBuffers(hidden=3, dtype=torch.float32, device="cpu", rows=2)
    assert buf.read(torch.tensor([0]), torch.tensor([0]), batch_size=3) is None


def test_tapset_on_an_sglang_shaped_toy_decoder_writes_and_reads_back_eagerly():
    """benchmarks/gpu/tap_graph_check.py's eager part (its CUDA-graph part runs in benchmarks/gpu/check.sh): ESamp's
    real TapSet on a toy decoder with SGLang's module shape; rows equal the toy's own states; a stock step writes
    nothing."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "tap_graph_check.py"
    spec = importlib.util.spec_from_file_location("tap_graph_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dry-run", "--batch", "8"]) == 0
