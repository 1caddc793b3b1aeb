"""update_graphs.py on CPU (its ``static`` mode: the buffers, padding and keys a CUDA replay uses, run eagerly):
the same bank as the reference step, no host read in ``run``, stats folded as the reference's results."""
import copy

import torch

from sglang_esamp.algo.distiller.bank import DistillerBank
from sglang_esamp.algo.update.divergence_guard import DivergenceGuard
from sglang_esamp.algo.update.slot_optimizer import OptimizerSpec
from sglang_esamp.algo.counters import ESampCounters
from sglang_esamp.algo.distiller.distiller import DistillerShape
from sglang_esamp.algo.update.update_graphs import UpdateGraphs
from tests.host_reads import no_host_reads

H = 16
SHAPE = DistillerShape(hidden=H, blocks=2, width=24)


def banks():
    ref = DistillerBank(SHAPE, slots=8, optimizer=OptimizerSpec(lr=1e-2), seed=1, fused_adam=False,
                        guard=DivergenceGuard(min_steps=2))
    for _ in range(3):
        ref.acquire(warm=False)
    return ref, copy.deepcopy(ref)


def batch(rows, gen):
    host = [i % 3 for i in range(rows)]
    host[-1] = -1                                    # a row with no slot
    src = torch.randn(rows, H, generator=gen)
    return src, src.flip(1) * 0.3, torch.tensor(host), host


def test_static_mode_trains_like_the_reference_and_reads_nothing_back():
    ref, bank = banks()
    counters = ESampCounters(8)
    graphs = UpdateGraphs(bank, counters)
    assert graphs.mode == "static"
    gen = torch.Generator().manual_seed(0)
    for rows in (7, 5, 7, 11):                       # buckets 8, 8, 8, 16: a key reused and a new one
        src, tgt, sid, host = batch(rows, gen)
        keep = sid >= 0
        want = ref.train_step(src[keep], tgt[keep], sid[keep])
        with no_host_reads():
            graphs.run(src, tgt, sid, host)
        (got,) = graphs.fold_ready()
        assert got.slots == want.slots and got.rows == want.rows and got.updated == want.updated
        for name in ref.params:
            torch.testing.assert_close(bank.params[name], ref.params[name], rtol=1e-5, atol=1e-6)
    assert counters.get("update_graph_static_steps") == 4 and len(graphs._buffers) == 2
    assert graphs.flush() == []


def test_eager_above_the_largest_bucket_and_nothing_for_a_batch_without_slots():
    _, bank = banks()
    graphs = UpdateGraphs(bank, ESampCounters(8), buckets=(4,))
    gen = torch.Generator().manual_seed(1)
    src, tgt, sid, host = batch(6, gen)
    graphs.run(src, tgt, sid, host)
    assert graphs.counters.get("update_graph_eager_steps") == 1 and graphs.fold_ready()[0].slots == [0, 1, 2]
    graphs.run(src, tgt, torch.full((6,), -1), [-1] * 6)
    assert graphs.fold_ready() == []
