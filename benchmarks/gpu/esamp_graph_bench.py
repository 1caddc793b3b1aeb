"""ESamp's cost per decode step against a graph-replayed forward of a real model shape (issue #38): PyTorch +
Triton, no SGLang.

    python benchmarks/gpu/esamp_graph_bench.py [--shapes 0.5b,7b] [--rows 64,128,256] [--steps 30] [--dry-run]

The ``off`` arm is what SGLang does on a GPU: a stand-in decode forward captured in one CUDA graph and replayed --
per layer the QKV, O, gate/up and down GEMMs at the batch size (bf16, random weights; one layer's weights serve
every layer, each bigger than the L2 cache, so every layer reads its weights from memory) and attention over a KV
cache of ``--kv-tokens`` tokens per row (one cache read by every layer) -- then the LM head and a min-p Gumbel-max
draw over the full vocabulary (SGLang's own sampler runs after the graph, outside it). The next step's input is
the embedding of the drawn tokens, so each step depends on the last draw, as in decoding.
ESamp arms replace the draw by the sync-free ESamp step (taps: the hidden state after layer 2 and the LM-head
input; predict -> candidates -> reweight -> draw, then the distiller update):
  eager_serial / eager_async    the rule run eagerly; update inline / on the side stream
  graph_serial / graph_async    the rule replayed from its CUDA graph (``algo.rule.step_graphs``), and the update from
                                its own (``algo.update.update_graphs``; eager arms run the same sync-free update eagerly)
Groups of ``--group`` rows share a slot (n=8 by default), beta 0.25, T 1, min-p ``--min-p`` (no top-k: the
candidate width is the cap + 1, ``--cap``). The noise is drawn on the device from a fixed seed and passed in, so
graph and eager arms must give the same tokens and the same final distiller weights (checked, per update mode).
Prints and saves (``--out``.json/.png): ms per step per arm (median over ``--repeats`` timed runs of ``--steps``
steps after warm-up), the ratio on/off, kernel launches per step (torch.profiler, one step), and the checks. The
JSON is rewritten after every shape x rows cell, so a run cut off by the lease's watchdog keeps the cells it ended.
``--dry-run``: tiny shapes on the CPU (no graphs: the forward runs eagerly and the rule in its ``static`` mode).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.filters import width_bucket
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.update.update_graphs import COUNTERS as UPDATE_GRAPH_COUNTERS
from sglang_esamp.algo.update.job import Update

# hidden, layers, heads, kv heads, head dim, intermediate, vocab (the models' config.json)
SHAPES = {"0.5b": (896, 24, 14, 2, 64, 4864, 151936), "7b": (3584, 28, 28, 4, 128, 18944, 152064),
          "tiny": (64, 3, 4, 2, 16, 128, 512)}
ARMS = ("off", "eager_serial", "graph_serial", "eager_async", "graph_async")
SHALLOW_LAYER = 2


class StandInModel:
    """The decode forward of a model shape with random bf16 weights; ``step()`` runs it on the static input."""

    def __init__(self, shape, rows, kv_tokens, device, dtype):
        h, self.layers, nh, nkv, hd, inter, vocab = shape
        g = torch.Generator(device=device).manual_seed(0)   # drawn on the device: GBs of weights in seconds

        def w(*s, scale):
            return (torch.randn(*s, generator=g, device=device) * scale).to(dtype)
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.w_qkv = w(h, (nh + 2 * nkv) * hd, scale=h ** -0.5)
        self.w_o = w(nh * hd, h, scale=(nh * hd) ** -0.5)
        self.w_gu = w(h, 2 * inter, scale=h ** -0.5)
        self.w_down = w(inter, h, scale=inter ** -0.5 * 0.2)
        self.kv = w(2, rows, nkv, kv_tokens, hd, scale=1.0)
        self.lm_head = w(vocab, h, scale=h ** -0.5)
        self.embed = w(vocab, h, scale=1.0)
        self.x = torch.zeros(rows, h, device=device, dtype=dtype)          # static input (next token's embedding)
        self.h_src = torch.zeros(rows, h, device=device, dtype=dtype)      # static outputs
        self.h_tgt = torch.zeros(rows, h, device=device, dtype=dtype)
        self.logits = torch.zeros(rows, vocab, device=device, dtype=torch.float32)

    def _layer(self, x):
        r = x.shape[0]
        q, k, v = (x @ self.w_qkv).split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], dim=1)
        del k, v   # the new token's k/v would be appended to the cache; the read below is the cost
        q = q.view(r, self.nkv, self.nh // self.nkv, self.hd)
        scores = torch.matmul(q, self.kv[0].transpose(-1, -2)) * self.hd ** -0.5     # [r, nkv, group, T]
        att = torch.matmul(torch.softmax(scores.float(), dim=-1).to(x.dtype), self.kv[1])
        x = x + att.reshape(r, -1) @ self.w_o
        gate, up = (x @ self.w_gu).chunk(2, dim=1)
        return x + (torch.nn.functional.silu(gate) * up) @ self.w_down

    def step(self):
        h = self.x
        for i in range(self.layers):
            h = self._layer(h)
            if i == SHALLOW_LAYER - 1:
                self.h_src.copy_(h)
            h = torch.nn.functional.rms_norm(h, (h.shape[1],)) if hasattr(torch.nn.functional, "rms_norm") else h
        self.h_tgt.copy_(h)
        self.logits.copy_((h @ self.lm_head.T).float())


def stock_draw(logits, min_p, noise):
    """Min-p + Gumbel-max over the full vocabulary (what a GPU sampler kernel does, one pass)."""
    probs = torch.softmax(logits, dim=-1)
    keep = probs >= probs.max(dim=-1, keepdim=True).values * min_p
    return torch.where(keep, logits + noise, float("-inf")).argmax(dim=-1)


def captured_model(shape, rows, a, device):
    """The stand-in model and its forward: a CUDA-graph replay on CUDA, the eager forward on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = StandInModel(shape, rows, a.kv_tokens, device, dtype)
    if device.type != "cuda":
        return model, model.step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        model.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.step()
    return model, graph.replay


def run_arm(arm, a, shape, rows, device, noise_all, model, forward):
    core = None
    if arm != "off":
        mode = arm.split("_")[1]
        slots_n = max(1, rows // a.group)
        core = ESampCore(ESampConfig(bank_slots=slots_n, update_mode=mode, sync_free="on", candidate_cap=a.cap,
                                     default_beta=a.beta), shape[0], model.lm_head, None, device)
        held = [core.acquire_slot() for _ in range(slots_n)]
        host_slots = [held[min(i // a.group, slots_n - 1)] for i in range(rows)]
        slots = torch.tensor(host_slots, device=device)
        if arm.startswith("eager"):
            core.graphs.mode = core.update_graphs.mode = "eager"
        ones, zeros = torch.ones(rows, device=device), torch.zeros(rows, device=device)
        big = torch.full((rows,), 1 << 30, dtype=torch.int64, device=device)
        width = width_bucket([1 << 30], a.cap, shape[6])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens = torch.zeros(rows, dtype=torch.int64, device=device)
    drawn = []

    def one(step):
        nonlocal tokens
        model.x.copy_(model.embed.index_select(0, tokens))
        forward()
        noise = noise_all[step % noise_all.shape[0]]
        if core is None:
            tokens = stock_draw(model.logits, a.min_p, noise)
        else:
            inputs = RuleInputs(model.logits, ones, big, ones, zeros + a.min_p, zeros + a.beta, ones,
                                h_src=model.h_src, slots=slots, noise=noise[:, :a.cap + 1], width=width)
            _, out = core.sample(inputs)
            core.train(Update(model.h_src.clone(), model.h_tgt.clone(), slots, sample=out, host_slots=host_slots))
            tokens = out.tokens
        return tokens

    for s in range(a.warmup):
        drawn.append(one(s).clone())
    times = []
    step = a.warmup
    for _ in range(a.repeats):
        if core is not None:
            core.wait_for_update()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            drawn.append(one(step).clone())
            step += 1
        if core is not None:
            core.wait_for_update()
        sync()
        times.append(1e3 * (time.perf_counter() - t0) / a.steps)
    launches = count_launches(one, step, device) if device.type == "cuda" else None
    if core is not None:
        core.wait_for_update()
    result = {"ms_per_step": statistics.median(times), "ms_runs": times, "launches_per_step": launches}
    weights = None
    if core is not None:
        st = core.stats()
        result.update(updates=st["updates"], rows_reweighted=st["candidate_rows_reweighted"],
                      graph_replays=st.get("graph_replays", 0), graph_captures=st.get("graph_captures", 0),
                      graph_eager_steps=st.get("graph_eager_steps", 0),
                      graph_static_steps=st.get("graph_static_steps", 0),
                      **{name: st.get(name, 0) for name in UPDATE_GRAPH_COUNTERS},
                      candidates_per_row=st.get("candidates_per_row_mean"))
        weights = {k: v.detach().float().cpu() for k, v in core.bank.params.items()}
        core.runner.close()
    return result, torch.stack(drawn).cpu(), weights


def count_launches(one, step, device):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        one(step)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="0.5b,7b")
    p.add_argument("--rows", default="64,128,256")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kv-tokens", type=int, default=1024)
    p.add_argument("--group", type=int, default=8, help="rows per group (n)")
    p.add_argument("--cap", type=int, default=1024, help="candidate cap (--esamp-candidate-cap)")
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    p.add_argument("--out", default="benchmarks/results/gpu/esamp_graph_bench")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.dry_run else "cpu")
    if a.dry_run:
        a.shapes, a.rows, a.steps, a.warmup, a.repeats, a.kv_tokens, a.cap = "tiny", "16", 3, 2, 1, 16, 64
        a.out = a.out + "_dry"
    elif device.type != "cuda":
        raise SystemExit("no CUDA device: run with --dry-run on a CPU")
    arms = [x for x in a.arms.split(",") if x]
    table, ok = [], True
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"settings": vars(a), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "cells": {}}
    for shape_name in a.shapes.split(","):
        shape = SHAPES[shape_name]
        for rows in map(int, a.rows.split(",")):
            g = torch.Generator(device=device).manual_seed(1)
            total = a.warmup + a.steps * a.repeats + 1
            noise_all = -torch.empty(min(total, 8), rows, shape[6], device=device).exponential_(generator=g).log()
            cell, toks, ws = {}, {}, {}
            model, forward = captured_model(shape, rows, a, device)
            for arm in arms:
                try:
                    cell[arm], toks[arm], ws[arm] = run_arm(arm, a, shape, rows, device, noise_all, model, forward)
                except Exception as e:   # one arm failing must not hide the others (one device lease)
                    cell[arm] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                    ok = False
                print(f"[{shape_name} x {rows}] {arm}: " + (f"{cell[arm]['ms_per_step']:.3f} ms/step"
                      if "error" not in cell[arm] else cell[arm]["error"][:300]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            del noise_all, model, forward
            checks = {}
            for mode in ("serial", "async"):
                e, gname = f"eager_{mode}", f"graph_{mode}"
                if e in toks and gname in toks:
                    checks[mode] = {"same_tokens": bool(torch.equal(toks[e], toks[gname])),
                                    "same_weights": all(torch.allclose(ws[e][k], ws[gname][k], atol=1e-6, rtol=0)
                                                        for k in ws[e])}
                    ok &= all(checks[mode].values())
            off = cell.get("off", {}).get("ms_per_step")
            for arm, r in cell.items():
                if off and "ms_per_step" in r:
                    r["ratio_to_off"] = r["ms_per_step"] / off
                    r["overhead_pct"] = 100 * (r["ms_per_step"] / off - 1)
            results["cells"][f"{shape_name}x{rows}"] = {"arms": cell, "graph_vs_eager": checks}
            out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")   # a cut-off run keeps it
            table.append((shape_name, rows, cell, checks))
    print_table(table)
    plot(table, out.with_suffix(".png"))
    print(f"saved {out.with_suffix('.json')} and .png")
    return 0 if ok else 1


def print_table(table):
    print("| shape x rows | " + " | ".join(ARMS) + " | graph = eager (tokens, weights) |")
    print("|---" * (len(ARMS) + 2) + "|")
    for shape, rows, cell, checks in table:
        cols = []
        for arm in ARMS:
            r = cell.get(arm, {})
            if "ms_per_step" not in r:
                cols.append("error" if "error" in r else "-")
            elif arm == "off":
                cols.append(f"{r['ms_per_step']:.2f} ms")
            else:
                cols.append(f"{r['ms_per_step']:.2f} ms (+{r.get('overhead_pct', float('nan')):.1f} %)")
        chk = ", ".join(f"{m}: {c['same_tokens']}/{c['same_weights']}" for m, c in checks.items())
        print(f"| {shape} x {rows} | " + " | ".join(cols) + f" | {chk} |")


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{s} x {r}" for s, r, _, _ in table]
    width = 0.8 / len(ARMS)
    for i, arm in enumerate(ARMS):
        ys = [c.get(arm, {}).get("ms_per_step", 0.0) for _, _, c, _ in table]
        ax.bar([j + i * width for j in range(len(table))], ys, width, label=arm)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(table))], labels)
    ax.set_ylabel("ms per decode step")
    ax.set_title("ESamp on a graph-replayed forward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
