"""Algorithm-level check of the overlapped distiller update: serial vs async (worker thread, and on CUDA its side
stream + events), on a synthetic decode loop with a stand-in "forward" on the main stream. No SGLang needed.

    python benchmarks/gpu/async_update_check.py [--device cuda] [--steps 60]
        [--out benchmarks/results/async_update_check]

Per step: forward stand-in (matmuls sized like a small model's decode step) -> predict -> ESamp rule over the
full-vocabulary logits -> update. Mode ``off`` is the same loop without ESamp (forward, logits, a Gumbel draw), so
``overhead_ms`` = a mode's ms per step minus off's is what ESamp adds (``--graph-forward-ms`` makes the forward a
GPU-busy stretch with the host free, as a replayed CUDA graph is), and ``hidden_share`` = how much of the
serial overhead the async update hides. All inputs and the sampling noise are drawn on the device from fixed
seeds (noise drawn on the host would dominate a GPU step). Reports whether both ESamp modes drew the same tokens
with the same final distiller weights (the staleness contract). ``--profile`` adds the top ops of the serial
step (torch.profiler). ``--dry-run`` runs it tiny on the CPU (what CI-less machines can check).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.update.job import Update


def run(mode, a, device, profile_steps=0):
    g = torch.Generator(device="cpu").manual_seed(0)
    w = (torch.randn(a.vocab, a.hidden, generator=g) * 0.05).to(device)
    ffn = (torch.randn(a.hidden, 4 * a.hidden, generator=g) * 0.02).to(device)
    gd = torch.Generator(device=device).manual_seed(1)      # inputs and noise on the device, same in every mode
    core = None
    if mode != "off":
        core = ESampCore(ESampConfig(bank_slots=a.slots, update_mode=mode), a.hidden, w, None, device)
        held = [core.acquire_slot() for _ in range(a.slots)]
        slots = torch.tensor([held[i % a.slots] for i in range(a.rows)], device=device)
    tokens = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # a replayed CUDA graph: one GPU-busy kernel, the host free
    sleep_cycles = int(a.graph_forward_ms * 1e-3 * _clock_hz()) if a.graph_forward_ms > 0 and device.type == "cuda" \
        else 0
    t0 = None
    for step in range(a.steps + 3):
        if step == 3:          # warm-up steps excluded
            sync()
            t0 = time.perf_counter()
        x = torch.randn(a.rows, a.hidden, generator=gd, device=device)
        h = x
        for _ in range(a.forward_layers):              # the forward stand-in on the main stream
            h = torch.tanh(h @ ffn) @ ffn.T * 0.1 + h
        if sleep_cycles:
            torch.cuda._sleep(sleep_cycles)
        src, tgt = x, h
        logits = tgt @ w.T
        noise = -torch.empty(a.rows, a.vocab, device=device).exponential_(generator=gd).log()
        if core is None:
            tokens.append((logits + noise).argmax(-1))
            continue
        tokens.append(_esamp_step(core, a, device, slots, src, tgt, logits, noise))
    if core is not None:
        core.wait_for_update()
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    result = {"ms_per_step": 1e3 * dt}
    weights = {}
    if core is not None:
        stats = core.stats()
        weights = {k: v.detach().cpu().clone() for k, v in core.bank.params.items()}
        result.update(updates=stats["updates"],
                      phase_ms={k[5:-2]: 1e3 * v / (a.steps + 3) for k, v in stats.items() if k.startswith("time_")})
        if profile_steps:
            result["profile"] = _profile(core, a, device, slots, w, gd, profile_steps)
        core.runner.close()
    return result, torch.stack(tokens).cpu(), weights


def _esamp_step(core, a, device, slots, src, tgt, logits, noise):
    """predict -> the ESamp rule (top-k 40, beta 0.25) -> update; the step's tokens."""
    _, out = core.sample(RuleInputs(logits, torch.ones(a.rows, device=device),
                                    torch.full((a.rows,), 40, device=device), torch.ones(a.rows, device=device),
                                    torch.zeros(a.rows, device=device), torch.full((a.rows,), 0.25, device=device),
                                    h_src=src, slots=slots, noise=noise), record=True)
    core.train(Update(src, tgt, slots))
    return out.tokens


def _clock_hz() -> float:
    rate_khz = getattr(torch.cuda.get_device_properties(0), "clock_rate", None)
    return rate_khz * 1e3 if rate_khz else 1.98e9      # H200 boost clock when torch does not report it


def _profile(core, a, device, slots, w, gd, steps):
    """Top ops (self time) of ``steps`` more ESamp steps: where the per-step cost goes."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            x = torch.randn(a.rows, a.hidden, generator=gd, device=device)
            logits = x @ w.T
            noise = -torch.empty(a.rows, a.vocab, device=device).exponential_(generator=gd).log()
            _esamp_step(core, a, device, slots, x, x, logits, noise)
        core.wait_for_update()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {"steps": steps, "by_cpu": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20),
            "by_device": prof.key_averages().table(sort_by=key, row_limit=12)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--forward-layers", type=int, default=24)
    p.add_argument("--graph-forward-ms", type=float, default=0.0,
                   help="add a GPU-busy kernel of about this many ms to the forward, as a CUDA-graph replay of a real "
                        "model would be (one launch, host free); CUDA only")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS", help="profile this many serial steps")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", default="benchmarks/results/async_update_check")
    a = p.parse_args(argv)
    if a.dry_run:
        a.device, a.steps, a.hidden, a.vocab, a.rows, a.slots, a.forward_layers = "cpu", 6, 64, 512, 8, 2, 2
        a.out = a.out + "_dry"
    device = torch.device(a.device)
    res, toks, ws = {}, {}, {}
    for mode in ("off", "serial", "async"):
        res[mode], toks[mode], ws[mode] = run(mode, a, device, a.profile if mode == "serial" else 0)
        prof = res[mode].pop("profile", None)
        print(f"{mode}: {res[mode]['ms_per_step']:.2f} ms/step" + ("" if mode == "off" else
              f", updates {res[mode]['updates']}, phases "
              f"{json.dumps({k: round(v, 3) for k, v in res[mode]['phase_ms'].items()})}"), flush=True)
        if prof:
            Path(a.out + "_profile.txt").write_text(prof["by_cpu"] + "\n" + prof["by_device"])
            print(prof["by_cpu"], flush=True)
    for mode in ("serial", "async"):
        res[mode]["overhead_ms"] = res[mode]["ms_per_step"] - res["off"]["ms_per_step"]
    same_tokens = torch.equal(toks["serial"], toks["async"])
    same_weights = all(torch.equal(ws["serial"][k], ws["async"][k]) for k in ws["serial"])
    over_s, over_a = res["serial"]["overhead_ms"], res["async"]["overhead_ms"]
    out = {"settings": vars(a), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "modes": res, "speedup_async_over_serial": res["serial"]["ms_per_step"] / res["async"]["ms_per_step"],
           "hidden_share": (1 - over_a / over_s) if over_s > 0 else None,
           "same_tokens": same_tokens, "same_final_weights": same_weights}
    print(f"ESamp overhead per step: serial {over_s:.2f} ms, async {over_a:.2f} ms (off {res['off']['ms_per_step']:.2f}"
          f" ms/step); async speed-up {out['speedup_async_over_serial']:.3f}x; same tokens {same_tokens}, "
          f"same final weights {same_weights}")
    path = Path(a.out).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")
    if not (same_tokens and same_weights):
        raise SystemExit("async and serial disagree: the staleness contract is broken")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
