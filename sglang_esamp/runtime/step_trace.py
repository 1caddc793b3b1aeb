"""Optional per-step trace of what the ESamp rule did, for tests and debugging (off unless asked for).

``SGLANG_ESAMP_STEP_TRACE=/path/trace.jsonl`` makes the scheduler append one JSON line per ESamp row per decode
step: ``{"rid", "group", "batch_rids", "cand_ids", "cand_logits", "token"}`` (candidates in the LLM's rank order;
logits are the reweighted ones the token was sampled from). It is what the equivalence test compares against the
reference decoder. Costs a host copy per step, so never enable it when measuring throughput.

``SGLANG_ESAMP_TAP_TRACE=/path/taps.jsonl`` appends the taps of every ESamp decode row: ``{"rid", "h_src",
"h_tgt"}`` (fp32 lists): what the per-family tap tests compare against the HF model's own hidden states.
"""
from __future__ import annotations

import json
import os
from typing import List

ENV = "SGLANG_ESAMP_STEP_TRACE"
TAPS_ENV = "SGLANG_ESAMP_TAP_TRACE"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def taps_enabled() -> bool:
    return bool(os.environ.get(TAPS_ENV))


def write_taps(rids: List[str], h_src, h_tgt) -> None:
    src, tgt = h_src.float().tolist(), h_tgt.float().tolist()
    with open(os.environ[TAPS_ENV], "a") as f:
        for i, rid in enumerate(rids):
            f.write(json.dumps({"rid": rid, "h_src": src[i], "h_tgt": tgt[i]}) + "\n")


def write(rids: List[str], groups: List[str], out) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    counts = out.counts.tolist()
    ids = out.cand_ids.tolist()
    logits = out.cand_logits.float().tolist()
    tokens = out.tokens.tolist()
    with open(path, "a") as f:
        for i, rid in enumerate(rids):
            c = counts[i]
            f.write(json.dumps({"rid": rid, "group": groups[i], "batch_rids": rids, "cand_ids": ids[i][:c],
                                "cand_logits": logits[i][:c], "token": tokens[i]}) + "\n")
