"""Online-loss trace: a warm-started vs a random-init distiller trained online on held-out continuations.

    python -m distiller_pretrain.online_trace --recording runs/smollm2/recording \
        --warm-start runs/smollm2/export/smollm2-135m-instruct.paper.paper.safetensors --out trace.json

Replays what a server slot does for one sequence (DESIGN §1): at each decode step predict the row with the current
weights, score that prediction (the online loss), then take one Adam step on the row (lr 4e-4, eps 1e-4, grad-norm
clip 0.5). Continuations are the recording's held-out documents (same split as training), so the warm start never
saw them. Reported per step bucket: mean online loss of each init, and of two references on the same rows: the
identity map (where a random init starts) and a running mean of the sequence's earlier h_tgt (the honest baseline).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BUCKETS = ((1, 24), (25, 49), (50, 99), (100, 199), (200, 10**9))


def replay(src, tgt, distiller, lr=4e-4, eps=1e-4, clip=0.5):
    """Per-step online losses of ``distiller`` trained one row at a time (predict, score, then update)."""
    import torch

    opt = torch.optim.Adam(distiller.parameters(), lr=lr, eps=eps)
    losses = []
    for t in range(len(src)):
        x, y = src[t:t + 1].float(), tgt[t:t + 1].float()
        loss = (distiller(x) - y).pow(2).sum(-1).mean()
        losses.append(float(loss))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(distiller.parameters(), clip)
        opt.step()
    return losses


def references(src, tgt):
    """Identity and running-mean-of-earlier-targets losses per step (step 1's running mean is 0)."""
    ident = (tgt.float() - src.float()).pow(2).sum(-1).tolist()
    csum = tgt.float().cumsum(0)
    prev_mean = [tgt[0].float() * 0] + [csum[t - 1] / t for t in range(1, len(tgt))]
    run = [float((tgt[t].float() - prev_mean[t]).pow(2).sum()) for t in range(len(tgt))]
    return ident, run


def bucketize(per_doc: list) -> list:
    """per_doc: list of dicts name -> per-step losses; -> rows per bucket with the mean of each name."""
    out = []
    for lo, hi in BUCKETS:
        vals = {}
        for d in per_doc:
            for name, seq in d.items():
                vals.setdefault(name, []).extend(seq[lo - 1:hi])
        n = len(next(iter(vals.values()), []))
        if n:
            out.append({"steps": f"{lo}-{hi if hi < 10**9 else ''}", "rows": n,
                        **{k: sum(v) / len(v) for k, v in vals.items()}})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.online_trace", description=__doc__.splitlines()[0])
    p.add_argument("--recording", required=True)
    p.add_argument("--warm-start", required=True, help="exported warm-start .safetensors")
    p.add_argument("--val-fraction", type=float, default=0.05, help="the split used in training")
    p.add_argument("--docs", type=int, default=40, help="held-out continuations to replay")
    p.add_argument("--min-rows", type=int, default=100, help="skip continuations shorter than this")
    p.add_argument("--seed", type=int, default=0, help="random-init seed")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = p.parse_args(argv)

    import torch

    from sglang_esamp.algo.distiller.distiller import Distiller

    from .data import is_val_doc
    from .evaluated import recording_and_warm_start
    from .shards import load_pairs

    torch.set_num_threads(a.threads)
    manifest, shape, state = recording_and_warm_start(p, a.recording, a.warm_start)
    pairs = load_pairs(a.recording)
    docs = [d for d in pairs["doc"].unique().tolist() if bool(is_val_doc(torch.tensor(d), a.val_fraction))]
    per_doc, used = [], []
    for d in docs:
        rows = (pairs["doc"] == d).nonzero(as_tuple=True)[0]
        if len(rows) < a.min_rows:
            continue
        rows = rows[pairs["pos"][rows].argsort()]  # decode order
        src, tgt = pairs["src"][rows], pairs["tgt"][rows]
        warm = Distiller(shape)
        warm.load_export_state(state)
        rand = Distiller(shape, generator=torch.Generator().manual_seed(a.seed + d))
        ident, run = references(src, tgt)
        per_doc.append({"warm_start": replay(src, tgt, warm), "random_init": replay(src, tgt, rand),
                        "identity": ident, "running_mean": run})
        used.append(int(d))
        print(f"[online_trace] doc {d}: {len(rows)} steps", file=sys.stderr)
        if len(used) == a.docs:
            break
    if not per_doc:
        raise SystemExit(f"--recording: no held-out continuation with >= {a.min_rows} rows (lower --min-rows)")
    result = {"docs": used, "optimizer": {"kind": "adam", "lr": 4e-4, "eps": 1e-4, "clip": 0.5},
              "buckets": bucketize(per_doc), "warm_start": str(a.warm_start), "recording": str(a.recording)}
    for r in result["buckets"]:
        print(f"steps {r['steps']:>8} rows {r['rows']:>6}  warm {r['warm_start']:9.1f}  random {r['random_init']:9.1f}"
              f"  identity {r['identity']:9.1f}  running-mean {r['running_mean']:9.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
