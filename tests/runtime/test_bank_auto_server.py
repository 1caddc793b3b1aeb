"""The real server with the default ``--esamp-bank-slots auto`` (SmolLM2-135M, CPU): the bank it built is the sizing
rule applied to the numbers it reports, never more slots than SGLang's resolved max_running_requests, and the
startup log says it once."""
import pytest
import requests
import torch

from sglang_esamp.algo.distiller.bank import bank_memory
from sglang_esamp.algo.distiller.bank_sizing import HARD_CAP_CPU, auto_bank_slots, memory_left_after_sglang
from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.serve.cpu_defaults import CPU_MAX_TOTAL_TOKENS
from tests.server_utils import running_server

pytestmark = pytest.mark.slow
MAX_RUNNING = 48   # below the CPU hard cap, so on a machine with the memory this bound decides


def test_auto_bank_is_the_rule_applied_to_what_the_server_reports(tmp_path):
    log = tmp_path / "server.log"
    with running_server(["--max-running-requests", str(MAX_RUNNING), "--log-level", "warning"], log) as (base, _):
        rank = requests.get(base + "/esamp/stats", timeout=60).json()["ranks"][0]
        info = requests.get(base + "/server_info", timeout=60).json()
        r = requests.post(base + "/generate", json={"text": "Write a haiku about rain.", "sampling_params": {
            "temperature": 1.0, "max_new_tokens": 6, "n": 2, "ignore_eos": True, "esamp": True}}, timeout=600)
        assert r.status_code == 200, r.text
        total = requests.get(base + "/esamp/stats", timeout=60).json()["total"]
    assert not any(o["meta_info"]["esamp"]["fallback"] for o in r.json())   # the auto bank serves the group
    assert total["groups_acquired"] >= 1 and total["bank_full_fallbacks"] == 0
    config, sizing = rank["config"], rank["config"]["bank_sizing"]
    slots = config["bank_slots"]
    assert isinstance(slots, int) and slots == sizing["slots"] == rank["counters"]["bank_slots"]
    assert sizing["requested"] == "auto" and config["session_max"] == min(4, slots)

    # the rule, recomputed here from the numbers the server reports
    per_slot = bank_memory(ESampConfig().distiller_shape(576), 1, torch.float32, "adam").peak
    assert sizing["per_slot_bytes"] == per_slot
    left = memory_left_after_sglang(**sizing["inputs"])
    assert sizing["left_bytes"] == left
    expect = auto_bank_slots(per_slot_bytes=per_slot, left_bytes=left, headroom=config["memory_headroom"],
                             running_cap=MAX_RUNNING, hard_cap=HARD_CAP_CPU)
    assert (slots, sizing["decided_by"], sizing["running_cap"]) == (expect.slots, expect.decided_by, MAX_RUNNING)

    # ... and checked against what SGLang resolved after the bank was built
    state = info["internal_states"][0]
    assert slots <= state["effective_max_running_requests_per_dp"]
    memory = state["memory_usage"]
    assert memory["token_capacity"] == CPU_MAX_TOTAL_TOKENS
    kv_gib = sizing["inputs"]["kv_cap_bytes"] / 2**30
    assert kv_gib == pytest.approx(memory["kvcache"], rel=0.05)   # our estimate of the pool = the pool SGLang built

    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("[esamp] bank slots = ")]
    assert len(lines) == 1 and lines[0].endswith(config["bank_slots_rule"])
    assert f"{slots} (auto, decided by {expect.decided_by})" in lines[0] and "MiB per slot" in lines[0]
