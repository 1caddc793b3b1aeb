"""Algorithm-level check of the overlapped distiller update: serial vs async (worker thread, and on CUDA its side
stream + events), on a synthetic decode loop with a stand-in "forward" on the main stream. No SGLang needed.

    python benchmarks/async_update_check.py [--device cuda] [--steps 60] [--out benchmarks/results/async_update_check]

Per step: forward stand-in (matmuls sized like a small model's decode step) -> predict -> ESamp rule over the
full-vocabulary logits -> update. Reports ms per step per mode, the speed-up, and whether both modes drew the same
tokens with the same final distiller weights (fixed noise; the staleness contract). ``--dry-run`` runs it tiny on
the CPU (what CI-less machines can check).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore


def run(mode, a, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    w = (torch.randn(a.vocab, a.hidden, generator=g) * 0.05).to(device)
    ffn = (torch.randn(a.hidden, 4 * a.hidden, generator=g) * 0.02).to(device)
    cfg = ESampConfig(bank_slots=a.slots, update_mode=mode)
    core = ESampCore(cfg, a.hidden, w, None, device)
    slots = torch.tensor([core.acquire(f"g{i % a.slots}") for i in range(a.rows)], device=device)
    tokens = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = None
    for step in range(a.steps + 3):
        if step == 3:          # warm-up steps excluded
            sync()
            t0 = time.perf_counter()
        x = torch.randn(a.rows, a.hidden, generator=g).to(device)
        h = x
        for _ in range(a.forward_layers):              # the forward stand-in on the main stream
            h = torch.tanh(h @ ffn) @ ffn.T * 0.1 + h
        src, tgt = x, h
        h_hat = core.predict(src, slots)
        logits = tgt @ w.T
        noise = -torch.empty(a.rows, a.vocab, device="cpu").exponential_(generator=g).log().to(device)
        out = core.sample(logits, torch.ones(a.rows, device=device), torch.full((a.rows,), 40, device=device),
                          torch.ones(a.rows, device=device), torch.zeros(a.rows, device=device),
                          torch.full((a.rows,), 0.25, device=device), h_hat, noise=noise)
        tokens.append(out.tokens)
        core.train(src, tgt, slots)
    core.join()
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    stats = core.stats()
    weights = {k: v.detach().cpu().clone() for k, v in core.bank.params.items()}
    core.runner.close()
    return {"ms_per_step": 1e3 * dt, "updates": stats["updates"],
            "phase_ms": {k[5:-2]: 1e3 * v / (a.steps + 3) for k, v in stats.items() if k.startswith("time_")}}, \
        torch.stack(tokens).cpu(), weights


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--forward-layers", type=int, default=24)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", default="benchmarks/results/async_update_check")
    a = p.parse_args()
    if a.dry_run:
        a.device, a.steps, a.hidden, a.vocab, a.rows, a.slots, a.forward_layers = "cpu", 6, 64, 512, 8, 2, 2
        a.out = a.out + "_dry"
    device = torch.device(a.device)
    res, toks, ws = {}, {}, {}
    for mode in ("serial", "async"):
        res[mode], toks[mode], ws[mode] = run(mode, a, device)
        print(f"{mode}: {res[mode]['ms_per_step']:.2f} ms/step, updates {res[mode]['updates']}, "
              f"phases {json.dumps({k: round(v, 3) for k, v in res[mode]['phase_ms'].items()})}", flush=True)
    same_tokens = torch.equal(toks["serial"], toks["async"])
    same_weights = all(torch.equal(ws["serial"][k], ws["async"][k]) for k in ws["serial"])
    out = {"settings": vars(a), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "modes": res, "speedup_async_over_serial": res["serial"]["ms_per_step"] / res["async"]["ms_per_step"],
           "same_tokens": same_tokens, "same_final_weights": same_weights}
    print(f"async speed-up {out['speedup_async_over_serial']:.3f}x; same tokens {same_tokens}, "
          f"same final weights {same_weights}")
    path = Path(a.out).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")
    if not (same_tokens and same_weights):
        raise SystemExit("async and serial disagree: the staleness contract is broken")


if __name__ == "__main__":
    main()
