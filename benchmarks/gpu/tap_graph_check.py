"""Do ESamp's taps survive graph replay? An SGLang-free check of runtime/taps.py + runtime/tap_buffers.py.

A toy decoder with SGLang's shape (``model.layers[i].attn_boundary.prepare``, a logits processor taking
``(input_ids, hidden_states, lm_head, logits_metadata)``) gets ESamp's real TapSet. Then:
  1. eager: with an ESampStep attached, the rows read back equal the toy's own hidden states (both taps);
     without one, nothing is written (stock traffic pays nothing);
  2. CUDA graph (on a CUDA machine): the forward is captured once with the taps installed; for several steps new
     inputs are copied into the static inputs and the graph is replayed with no Python run in between: the rows
     read back must equal an eager forward on the same inputs, and the buffers keep their addresses;
  3. a graph captured *without* the taps, replayed: the read is a miss (None), never the previous step's rows.
Prints one line per check and writes a JSON summary (``--out``); exits non-zero on any failure.
``--dry-run``: the eager checks only (the machine has no CUDA).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from sglang_esamp.algo.reference.tap_spec import TapSpec
from sglang_esamp.algo.rule.inputs import RowTerms
from sglang_esamp.runtime import step_state
from sglang_esamp.runtime.tap_buffers import TapBuffers
from sglang_esamp.runtime.taps import TapSet

H, V, LAYERS, TAP_LAYER = 64, 256, 3, 1


class Boundary:
    def __init__(self, norm):
        self.norm = norm

    def prepare(self, hidden_states, forward_batch):
        return self.norm(hidden_states)


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(H)
        self.mlp = nn.Linear(H, H)
        self.attn_boundary = Boundary(self.input_layernorm)

    def forward(self, h, forward_batch):
        return h + torch.tanh(self.mlp(self.attn_boundary.prepare(h, forward_batch)))


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.pos = nn.Embedding(V, H), nn.Embedding(4096, H)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(H)

    def forward(self, input_ids, positions, forward_batch):
        h = self.embed(input_ids) + self.pos(positions)
        for layer in self.layers:
            h = layer(h, forward_batch)
        return self.norm(h)


class LogitsProcessor(nn.Module):
    final_logit_softcapping, logit_scale = None, None

    def forward(self, input_ids, hidden_states, lm_head, logits_metadata):
        return hidden_states @ lm_head.weight.t()


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.model, self.lm_head, self.logits_processor = Inner(), nn.Linear(H, V, bias=False), LogitsProcessor()

    def forward(self, input_ids, positions, forward_batch):
        return self.logits_processor(input_ids, self.model(input_ids, positions, forward_batch), self.lm_head,
                                     forward_batch)


class Decode:
    def is_decode(self):
        return True


def batch(ids, pos):
    return SimpleNamespace(forward_mode=Decode(), sampling_info=SimpleNamespace(), input_ids=ids, positions=pos)


def expected(toy, ids, pos):
    """The toy's own shallow (layer TAP_LAYER's normed input) and LM-head-input states, computed directly."""
    h = toy.model.embed(ids) + toy.model.pos(pos)
    src = None
    for i, layer in enumerate(toy.model.layers):
        if i == TAP_LAYER:
            src = layer.input_layernorm(h)
        h = layer(h, None)
    return src, toy.model.norm(h)


def esamp_step(rows, device):
    r = torch.tensor(rows, device=device)
    terms = RowTerms(slots=r * 0, betas=r.float(), distiller_coef=r.float())
    return step_state.ESampStep(rows=r, members=[None] * len(rows), planned_slots=[0] * len(rows), terms=terms)


def close(a, b):
    return a is not None and b is not None and torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="eager checks only (no CUDA)")
    p.add_argument("--out", default=None, help="JSON summary path")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    torch.manual_seed(0)
    toy = Toy().to(device).eval()
    spec = TapSpec(source=f"layers[{TAP_LAYER}].input_layernorm", target="lm_head_input")
    buffers = TapBuffers(H, torch.float32, device, rows=args.batch)
    taps = TapSet(toy, spec, buffers)
    results, bs = {}, args.batch
    rows = list(range(0, bs, 3))
    ridx = torch.tensor(rows, device=device)

    with torch.no_grad():
        ids = torch.randint(0, V, (bs,), device=device)
        pos = torch.randint(0, 4000, (bs,), device=device)
        fb = batch(ids, pos)
        step_state.attach(fb.sampling_info, None, esamp_step(rows, device))
        toy(ids, pos, fb)
        got = buffers.read(ridx, pos[ridx], bs)
        src, tgt = expected(toy, ids, pos)
        results["eager_rows_match"] = got is not None and close(got[0], src[ridx]) and close(got[1], tgt[ridx])
        plain = batch(ids, pos + 1)                     # no ESampStep: stock traffic
        toy(ids, pos + 1, plain)
        results["eager_stock_step_writes_nothing"] = buffers.read(ridx, (pos + 1)[ridx], bs) is None

        if device == "cuda":
            static_ids, static_pos = ids.clone(), pos.clone()
            fb = batch(static_ids, static_pos)        # no ESampStep: under capture the taps write regardless
            addresses = (buffers.h["source"].data_ptr(), buffers.h["target"].data_ptr())
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    toy(static_ids, static_pos, fb)    # warm-up, as SGLang's runner does before capture
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                toy(static_ids, static_pos, fb)
            ok = True
            for _ in range(args.steps):
                new_ids = torch.randint(0, V, (bs,), device=device)
                new_pos = torch.randint(0, 4000, (bs,), device=device)
                static_ids.copy_(new_ids)
                static_pos.copy_(new_pos)
                graph.replay()
                got = buffers.read(ridx, new_pos[ridx], bs)
                src, tgt = expected(toy, new_ids, new_pos)
                ok = ok and got is not None and close(got[0], src[ridx]) and close(got[1], tgt[ridx])
            results["graph_replay_rows_match"] = ok
            results["graph_buffers_kept_addresses"] = addresses == (buffers.h["source"].data_ptr(),
                                                                    buffers.h["target"].data_ptr())
            taps.remove()
            bare = torch.cuda.CUDAGraph()
            with torch.cuda.graph(bare):
                toy(static_ids, static_pos, fb)
            static_pos.add_(1)
            bare.replay()
            results["graph_without_taps_is_a_miss"] = buffers.read(ridx, static_pos[ridx], bs) is None
        else:
            taps.remove()
    for name, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    summary = {"device": device, "batch": bs, "steps": args.steps, "results": results,
               "passed": all(results.values())}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
