"""GPU micro-benchmark: Triton kernel vs torch reference, time per call, at realistic ESamp shapes.

    python -m esamp_kernels.bench --out results/kernels       # needs a CUDA device (exit code 2 otherwise)
    python -m esamp_kernels.bench --out /tmp/smoke --dry-run  # CPU smoke: tiny shapes, torch path only

Candidate novelty: R x C x H over a Qwen-size bf16 LM head (V = 151936), beta 0.25 on every row, full counts.
Grouped forward: R x H x preset (paper: 2 blocks, width 384; tllm: 1 block, width 64, output LN) over a bank of
8 slots, bf16 input rows spread over the slots. Each timed call starts with a cold L2 (a 256 MiB buffer is
cleared before it), as in serving, where the LM head and the bank are not cache-resident at sampling time.
Both implementations run the same inputs; the largest |triton - torch| is recorded next to the times.
Writes ``kernel_bench.json`` and ``kernel_bench.png`` (``--out`` is a directory, or a ``.json`` path).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from .layout import OUT_LN_BIAS, OUT_LN_WEIGHT, param_shapes

from .bench_report import print_table, save_json, save_plot
from .candidate_ref import candidate_novelty_logits_ref
from .grouped_forward_torch import grouped_distiller_forward_torch

VOCAB = 151936
ROWS = (8, 64, 128)
CANDS = (16, 256, 1024)
HIDDENS = (896, 1536, 3584)
PRESETS = {"paper": dict(blocks=2, width=384, out_ln=False), "tllm": dict(blocks=1, width=64, out_ln=True)}
SLOTS = 8
# --dry-run: the same loops at tiny sizes, so CI exercises every line but the GPU timing on CPU in seconds.
DRY = dict(vocab=1000, rows=(2, 4), cands=(4, 16), hiddens=(32, 48), widths={"paper": 24, "tllm": 8})


def _time_cuda(fn: Callable[[], object], rep_ms: float) -> float:
    """Median microseconds per call over about rep_ms of calls, each after an L2 flush."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    fn()  # compile / warm caches of the allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    estimate_ms = max((time.perf_counter() - t0) * 1e3 / 3, 1e-3)
    n = int(min(500, max(10, rep_ms / estimate_ms)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def _time_cpu(fn: Callable[[], object], reps: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def _candidate_args(rows, cands, head, device, gen):
    vocab, hidden = head.shape
    beta = torch.full((rows,), 0.25, device=device)
    return (torch.randn(rows, hidden, generator=gen, device=device).to(head.dtype),
            torch.randint(0, vocab, (rows, cands), generator=gen, device=device),
            torch.full((rows,), cands, dtype=torch.int64, device=device),
            torch.randn(rows, cands, generator=gen, device=device),
            head, None, beta, beta.clone())


def _bank(hidden, width, blocks, out_ln, dtype, device, gen):
    bank = {}
    for name, shape in param_shapes(hidden, width, blocks, out_ln).items():
        if name in (OUT_LN_WEIGHT, OUT_LN_BIAS):
            bank[name] = torch.full((SLOTS, *shape), 1.0 if name == OUT_LN_WEIGHT else 0.0, device=device, dtype=dtype)
        else:
            bank[name] = (torch.randn((SLOTS, *shape), generator=gen, device=device) * 0.02).to(dtype)
    return bank


def run(dry_run: bool, rep_ms: float, bank_dtypes: List[torch.dtype]) -> List[Dict]:
    device = "cpu" if dry_run else "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    vocab, rows_set, cands_set, hiddens = ((DRY["vocab"], DRY["rows"], DRY["cands"], DRY["hiddens"]) if dry_run
                                           else (VOCAB, ROWS, CANDS, HIDDENS))
    if dry_run:
        tri_cand = tri_fwd = None
        timer = _time_cpu
    else:
        from .candidate_triton import candidate_novelty_logits_triton as tri_cand
        from .grouped_forward_triton import grouped_distiller_forward_triton as tri_fwd
        timer = lambda fn: _time_cuda(fn, rep_ms)  # noqa: E731
    results = []

    def measure(op, shape, torch_fn, triton_fn):
        row = {"op": op, **shape, "torch_us": timer(torch_fn), "triton_us": None, "max_abs_diff": None}
        if triton_fn is not None:
            row["triton_us"] = timer(triton_fn)
            row["max_abs_diff"] = _max_diff(torch_fn(), triton_fn())
        results.append(row)
        print(f"  {op:18s} {shape}", flush=True)

    with torch.no_grad():
        for hidden in hiddens:
            head = (torch.randn(vocab, hidden, generator=gen, device=device) * 0.02).to(torch.bfloat16)
            for rows, cands in itertools.product(rows_set, cands_set):
                args = _candidate_args(rows, cands, head, device, gen)
                measure("candidate_novelty", dict(R=rows, C=cands, H=hidden, V=vocab),
                        lambda: candidate_novelty_logits_ref(*args),
                        None if tri_cand is None else (lambda: tri_cand(*args)))
            del head
            for (preset, cfg), bank_dtype, rows in itertools.product(PRESETS.items(), bank_dtypes, rows_set):
                width = DRY["widths"][preset] if dry_run else cfg["width"]
                bank = _bank(hidden, width, cfg["blocks"], cfg["out_ln"], bank_dtype, device, gen)
                x = torch.randn(rows, hidden, generator=gen, device=device).to(torch.bfloat16)
                ids = torch.randint(0, SLOTS, (rows,), generator=gen, device=device)
                fargs = (x, ids, bank, cfg["blocks"], cfg["out_ln"])
                measure("grouped_forward", dict(R=rows, H=hidden, preset=preset, W=width,
                                                 bank=str(bank_dtype).replace("torch.", "")),
                        lambda: grouped_distiller_forward_torch(*fargs),
                        None if tri_fwd is None else (lambda: tri_fwd(*fargs)))
    return results


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    fin = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf")
    return (a[fin] - b[fin]).abs().max().item() if fin.any() else 0.0


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _out_paths(out: str):
    p = Path(out)
    if p.suffix == ".json":
        return p, p.with_suffix(".png")
    return p / "kernel_bench.json", p / "kernel_bench.png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m esamp_kernels.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (or a .json path); a .png goes beside it")
    ap.add_argument("--dry-run", action="store_true", help="CPU smoke: tiny shapes through the torch path only")
    ap.add_argument("--rep-ms", type=float, default=200.0, help="time budget per measurement on the GPU")
    ap.add_argument("--bank-dtypes", default="float32", help="comma list of bank dtypes (float32,bfloat16)")
    args = ap.parse_args(argv)
    bank_dtypes = [getattr(torch, d.strip()) for d in args.bank_dtypes.split(",") if d.strip()]
    if not args.dry_run and not torch.cuda.is_available():
        print("esamp_kernels.bench: no CUDA device here; the benchmark times Triton kernels on a GPU. "
              "Run it on a GPU machine, or pass --dry-run for the CPU smoke run.", file=sys.stderr)
        return 2
    json_path, png_path = _out_paths(args.out)
    device_name = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name()
    print(f"esamp_kernels.bench on {device_name}", flush=True)
    results = run(args.dry_run, args.rep_ms, bank_dtypes)
    meta = {"device": device_name, "dry_run": args.dry_run, "torch": torch.__version__, "triton": _triton_version(),
            "slots": SLOTS, "rep_ms": args.rep_ms,
            "timing": "cpu wall clock" if args.dry_run else "CUDA events, median, cold L2 per call"}
    print_table(results)
    save_json(json_path, meta, results)
    plotted = save_plot(png_path, results, device_name)
    print(f"wrote {json_path}" + (f" and {png_path}" if plotted else " (matplotlib missing: no plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
