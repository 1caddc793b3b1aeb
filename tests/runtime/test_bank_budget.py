"""``--esamp-bank-slots auto`` on a (fake) loaded ModelRunner: which SGLang numbers feed the rule (runtime.bank_budget).
The real server's numbers are checked in test_bank_auto_server.py."""
import types

import pytest
import torch

from sglang_esamp.algo.distiller.bank import bank_memory
from sglang_esamp.algo.distiller.bank_sizing import HARD_CAP, HARD_CAP_CPU, auto_bank_slots, memory_left_after_sglang
from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.runtime.bank_budget import (kv_bytes_per_token, ranks_sharing_memory, resolve_bank_slots,
                                              running_requests_cap)

MiB, GiB = 2**20, 2**30
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


class FakeModelConfig:
    num_hidden_layers = num_attention_layers = 30
    head_dim = v_head_dim = 64
    dtype = torch.bfloat16

    def get_num_kv_heads(self, tp):
        return max(1, 3 // tp)


def runner(pre_gib=9.0, mfs=0.9, **args):
    base = dict(max_running_requests=None, max_total_tokens=None, mem_fraction_static=mfs, kv_cache_dtype="auto",
                tp_size=1, dp_size=1, enable_dp_attention=False)
    return types.SimpleNamespace(server_args=types.SimpleNamespace(**{**base, **args}), pre_model_load_memory=pre_gib,
                                 mem_fraction_static=mfs, model_config=FakeModelConfig())


def per_slot(hidden=576):
    return bank_memory(ESampConfig().distiller_shape(hidden), 1, torch.float32, "adam").peak


def test_kv_bytes_per_token_from_the_model_config():
    assert kv_bytes_per_token(runner()) == 30 * 3 * (64 + 64) * 2                  # bf16 K and V, 30 layers
    assert kv_bytes_per_token(runner(kv_cache_dtype="fp8_e4m3")) == 30 * 3 * 128 * 1
    assert kv_bytes_per_token(runner(tp_size=3)) == 30 * 1 * 128 * 2               # heads split over TP ranks
    assert kv_bytes_per_token(types.SimpleNamespace()) is None


def test_running_requests_cap_reads_what_sglang_knows_before_it_resolves():
    assert running_requests_cap(runner(max_running_requests=5).server_args) == 5
    assert running_requests_cap(runner().server_args) == 2048                      # SGLang resolves >= 2048
    assert running_requests_cap(runner(max_total_tokens=1000).server_args) == 500  # ... or half the pool's tokens
    assert running_requests_cap(runner(max_running_requests=64, dp_size=4, enable_dp_attention=True).server_args) == 16
    assert running_requests_cap(None) == 2048


def test_cpu_ranks_share_the_host_and_gpu_ranks_do_not():
    args = runner(dp_size=2, tp_size=2).server_args
    assert ranks_sharing_memory(args, CPU) == 4 and ranks_sharing_memory(args, CUDA) == 1


def test_cpu_server_with_our_token_cap_is_sized_from_host_ram_minus_the_kv_pool():
    r = runner(pre_gib=9.0, mfs=0.9, max_total_tokens=65536)
    cfg, sizing = resolve_bank_slots(ESampConfig(), r, 576, CPU, free_bytes=8 * GiB)
    kv = 65536 * 30 * 3 * 128 * 2
    assert sizing.inputs == dict(free_bytes=8 * GiB, pre_load_bytes=9 * GiB, mem_fraction_static=0.9,
                                 kv_cap_bytes=kv)
    assert sizing.left_bytes == 8 * GiB - kv
    assert (sizing.slots, sizing.decided_by, sizing.hard_cap) == (HARD_CAP_CPU, "hard_cap", HARD_CAP_CPU)
    assert cfg.bank_slots == HARD_CAP_CPU and cfg.session_max == 4 and sizing.per_slot_bytes == per_slot()


def test_cpu_ranks_of_one_server_share_the_host_after_all_their_kv_pools():
    r = runner(max_total_tokens=65536, dp_size=2)
    sizing = resolve_bank_slots(ESampConfig(), r, 576, CPU, free_bytes=8 * GiB)[1]
    kv = 2 * 65536 * 30 * 3 * 128 * 2
    assert sizing.inputs["kv_cap_bytes"] == kv and sizing.ranks == 2
    assert sizing.budget_bytes == int(0.5 * (8 * GiB - kv) / 2)


def test_gpu_server_budget_is_a_share_of_sglangs_runtime_reserve():
    r = runner(pre_gib=79.0, mfs=0.875)
    cfg, sizing = resolve_bank_slots(ESampConfig(), r, 896, CUDA, free_bytes=78 * GiB)
    left = memory_left_after_sglang(78 * GiB, 79 * GiB, 0.875)
    expect = auto_bank_slots(per_slot_bytes=per_slot(896), left_bytes=left, headroom=0.5, running_cap=2048,
                             hard_cap=HARD_CAP)
    assert left == int(0.125 * 79 * GiB) and sizing.left_bytes == left
    assert (cfg.bank_slots, sizing.slots, sizing.decided_by) == (expect.slots, expect.slots, "memory")
    assert 100 < sizing.slots < 300          # ~4.9 GiB / 39 MiB on an 80 GB card with a 0.5B model


def test_max_running_requests_and_headroom_bound_the_auto_bank():
    r = runner(max_running_requests=5, max_total_tokens=65536)
    assert resolve_bank_slots(ESampConfig(), r, 576, CPU, 8 * GiB)[1].decided_by == "max_running_requests"
    small = resolve_bank_slots(ESampConfig(memory_headroom=0.01), runner(max_total_tokens=65536), 576, CPU,
                               8 * GiB)[1]
    assert small.decided_by == "memory" and small.slots == int(0.01 * small.left_bytes) // per_slot()


def test_an_explicit_number_wins_and_reads_nothing_from_sglang():
    cfg, sizing = resolve_bank_slots(ESampConfig(bank_slots=10), types.SimpleNamespace(), 576, CPU, 1)
    assert cfg.bank_slots == 10 and (sizing.slots, sizing.decided_by) == (10, "explicit")


def test_auto_with_a_session_max_above_the_resolved_slots_is_refused():
    from sglang_esamp.algo.config import ESampParamError

    with pytest.raises(ESampParamError, match="--esamp-session-max"):
        resolve_bank_slots(ESampConfig(session_max=8), runner(max_running_requests=3), 576, CPU, 8 * GiB)


def _tp_rank(rank, port, slots, out):
    import torch.distributed as dist

    from sglang_esamp.runtime.bank_budget import min_across_tp_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = min_across_tp_ranks(slots[rank], None, group=dist.group.WORLD)
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_ranks_agree_on_the_smallest_bank():
    """Each TP rank sizes its replica from its own reading of free memory; all must end with the same slot count."""
    import socket

    import torch.multiprocessing as mp

    from sglang_esamp.runtime.bank_budget import min_across_tp_ranks

    assert min_across_tp_ranks(7, runner().server_args) == 7          # no TP: nothing to agree on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_tp_rank, args=(port, [40, 33], out), nprocs=2, join=True)
    assert dict(out) == {0: 33, 1: 33}
