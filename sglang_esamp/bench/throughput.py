"""ESamp's throughput cost, measured side by side in one run: ``python -m sglang_esamp.bench.throughput``.

Arms, alternating round by round (the order rotates) so machine noise hits all of them alike:
  on     one ESamp server, requests with ``esamp`` (beta 0.25, the server's update mode)
  off    the same server, the same requests without ``esamp`` (the plugin loaded but unused)
  stock  a second server with the plugin disabled (``SGLANG_ESAMP=0``): stock SGLang, what merely installing the
         plugin costs is off / stock
Default workload: Qwen2.5-Coder-0.5B-Instruct (``bash ci/setup_env.sh --bench``), 8 prompts x n=8, 128 new tokens,
ignore_eos, min-p 0.05, one forward thread. ``--quick``: SmolLM2, 4 prompts x n=4, 64 tokens (under 3 minutes).
``--esamp-url`` / ``--stock-url`` benchmark servers already running (e.g. started on a GPU with its own flags)
instead of starting them; ``--server-arg`` adds flags to the servers it starts.
``--no-filter`` drops min-p (the candidate cap then bounds the work), ``--serial`` runs the distiller update inline
(``--esamp-update-mode serial``, the diagnostic baseline), ``--compare-serial`` adds a second ESamp server with the
update inline and its arm ``on_serial`` (async vs serial side by side, in the same rounds), ``--threads`` sets the
forward's thread count.
Both servers run with ``--sleep-on-idle`` (our CPU default) so the idle one does not steal a core.

Prints and saves (``--output FILE.json`` plus ``FILE.png``): tokens/s per arm and round, the on/off and off/stock
ratios (median and spread over rounds), the ESamp time per phase (plan, taps, update wait, predict, candidates,
reweight, draw, submit, update) per decode step, the decode step's wall time split into those phases and SGLang's
rest (beside the off arm's step), and the work counters of the on arm. ``--compare BASELINE.json`` prints the change
against a committed result. Exits non-zero when the on arm did no ESamp
work (no update or no reweighted row): a fast run that did nothing is a bug.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from ..algo.counters import PHASES, SCHEDULER_PHASES
from ..serve.server_probe import ServerProbe
from .server_options import add_server_arg, server_arg_tokens

PROMPTS = ["Write a short poem about the sea.", "Give me three ideas for a birthday party.",
           "Describe a city on Mars.", "Tell a one-paragraph story about a lost key.",
           "Explain why the sky is blue.", "Suggest a name for a coffee shop.", "Invent a new board game.",
           "Write a limerick about a cat.",
           # 9-16: the GPU workload (16 x n=8, docs/performance.md); the default uses the first 8
           "Describe a city built under the sea.", "Write a short story about a lost robot.",
           "Give three tips for learning to cook.", "Explain how a rainbow forms.", "Invent a holiday and its customs.",
           "Write a haiku about autumn.", "Describe the perfect picnic.", "Suggest a name for a bakery."]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sglang_esamp.bench.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default qwen2.5-coder-0.5b-instruct (smollm2 with --quick)")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--no-filter", action="store_true", help="no min-p: the candidate cap bounds the work")
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="forward threads per server (OMP_NUM_THREADS)")
    p.add_argument("--serial", action="store_true", help="run the distiller update inline (update mode serial)")
    p.add_argument("--compare-serial", action="store_true",
                   help="add an on_serial arm: a second ESamp server whose update runs inline")
    p.add_argument("--no-stock", action="store_true", help="skip the stock-SGLang arm")
    p.add_argument("--quick", action="store_true", help="SmolLM2, 4 prompts x n=4, 64 tokens")
    p.add_argument("--esamp-url", default=None, help="an ESamp server already running (its on and off arms)")
    p.add_argument("--stock-url", default=None, help="a stock SGLang server already running (the stock arm)")
    add_server_arg(p)
    p.add_argument("--output", default=None, help="JSON path (a PNG is written beside it)")
    p.add_argument("--compare", default=None, metavar="BASELINE.json",
                   help="print the change of every arm's tok/s and of on/off against a committed result")
    a = p.parse_args(argv)
    quick = dict(model="smollm2-135m-instruct", prompts=4, n=4, tokens=64)
    full = dict(model="qwen2.5-coder-0.5b-instruct", prompts=8, n=8, tokens=128)
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not 1 <= a.prompts <= len(PROMPTS):
        p.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    if a.compare_serial and a.serial:
        p.error("--compare-serial already runs a serial arm beside the async one; drop --serial")
    if a.esamp_url and (a.serial or a.compare_serial):
        p.error("--esamp-url benchmarks a running server as it is: --serial / --compare-serial start servers")
    return a


def _generate(base: str, texts, params) -> dict:
    t0 = time.perf_counter()
    r = requests.post(base + "/generate", json={"text": texts, "sampling_params": params}, timeout=3600)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"/generate answered {r.status_code}: {r.text[:500]}")
    outs = r.json()
    tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    return {"seconds": dt, "tokens": tokens, "tok_s": tokens / dt}


def _spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run(a) -> dict:
    from transformers import AutoTokenizer

    from ..models import MODELS, resolve_model

    model_dir = resolve_model(a.model) if a.model in MODELS else a.model
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [tok.apply_chat_template([{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
             for x in PROMPTS[:a.prompts]]
    params = {"temperature": 1.0, "max_new_tokens": a.tokens, "n": a.n, "ignore_eos": True}
    if not a.no_filter:
        params["min_p"] = a.min_p
    arms = {"off": dict(params), "on": dict(params, esamp={"beta": a.beta})}
    extra = server_arg_tokens(a.server_arg)
    server_args = ["--model-path", model_dir, "--log-level", "error", "--disable-radix-cache",
                   "--esamp-bank-slots", str(max(8, a.prompts)), *extra, "--esamp-update-mode",
                   "serial" if a.serial else "async"]
    env = {"OMP_NUM_THREADS": str(a.threads)}   # the rest of the environment is inherited
    from ..serve.local_server import local_server

    logs = Path(tempfile.mkdtemp(prefix="esamp-bench-"))
    with ExitStack() as stack:
        running = [f"{arm} {url}" for arm, url in (("esamp", a.esamp_url), ("stock", a.stock_url)) if url]
        print(f"[bench] {a.model}: " + (f"running servers: {', '.join(running)}; " if running else "") +
              f"servers started here log in {logs}", flush=True)
        bases = {"esamp": a.esamp_url.rstrip("/") if a.esamp_url else
                 stack.enter_context(local_server(server_args, logs / "esamp.log", env))}
        if a.compare_serial:
            serial_args = server_args[:-1] + ["serial"]
            bases["esamp_serial"] = stack.enter_context(local_server(serial_args, logs / "esamp_serial.log", env))
        if a.stock_url:
            bases["stock"] = a.stock_url.rstrip("/")
        elif not a.no_stock:
            bases["stock"] = stack.enter_context(local_server(server_args, logs / "stock.log",
                                                              dict(env, SGLANG_ESAMP="0")))
        targets = {"on": (bases["esamp"], arms["on"]), "off": (bases["esamp"], arms["off"])}
        if "stock" in bases:
            targets["stock"] = (bases["stock"], arms["off"])
        if "esamp_serial" in bases:
            targets["on_serial"] = (bases["esamp_serial"], arms["on"])
        for base, p in targets.values():   # warm-up every path once
            _generate(base, texts, dict(p, max_new_tokens=4))
        probe = stack.enter_context(ServerProbe(bases["esamp"], timeout_s=60))
        before = probe.esamp_total()
        names = list(targets)
        rounds = []
        from tqdm import tqdm

        for r in tqdm(range(a.rounds), desc="rounds", file=sys.stderr):
            order = names[r % len(names):] + names[:r % len(names)]
            rec = {"round": r, "order": order}
            for arm in order:
                base, p = targets[arm]
                rec[arm] = _generate(base, texts, p)
            rec["ratio_on_off"] = rec["on"]["tok_s"] / rec["off"]["tok_s"]
            if "stock" in rec:
                rec["ratio_off_stock"] = rec["off"]["tok_s"] / rec["stock"]["tok_s"]
            if "on_serial" in rec:
                rec["ratio_async_serial"] = rec["on"]["tok_s"] / rec["on_serial"]["tok_s"]
            rounds.append(rec)
            print("[bench] round {}: ".format(r) + ", ".join(f"{k} {rec[k]['tok_s']:.1f} tok/s" for k in names) +
                  f", on/off {rec['ratio_on_off']:.3f}", flush=True)
        after = probe.esamp_total()
    work = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after.get(k), (int, float))}
    steps = max(1, work.get("esamp_steps", 0))
    result = {
        "settings": vars(a),
        "rounds": rounds,
        "tok_s": {arm: _spread([x[arm]["tok_s"] for x in rounds]) for arm in names},
        "ratio_on_off": _spread([x["ratio_on_off"] for x in rounds]),
        "ratio_off_stock": _spread([x["ratio_off_stock"] for x in rounds]) if "stock" in names else None,
        "ratio_async_serial": _spread([x["ratio_async_serial"] for x in rounds]) if "on_serial" in names else None,
        "phase_ms_per_step": {ph: 1e3 * work.get(f"time_{ph}_s", 0.0) / steps for ph in PHASES},
        "step_breakdown_ms": step_breakdown(work, a.prompts * a.n,
                                            statistics.median(x["off"]["tok_s"] for x in rounds)),
        "work": {k: work.get(k, 0) for k in ("esamp_steps", "updates", "rows_trained", "candidate_rows_reweighted",
                                            "finite_losses", "nonfinite_losses", "tap_misses",
                                            "bank_full_fallbacks")},
        "candidates_per_row_mean": (work.get("candidate_sum", 0) / work["candidate_rows_reweighted"]
                                    if work.get("candidate_rows_reweighted") else None),
    }
    return result


def step_breakdown(work: dict, rows: int, off_tok_s: float) -> dict:
    """The ESamp decode step's wall time (plan to next plan: a whole scheduler iteration) split into ESamp's phases
    on the scheduler thread and the rest (SGLang's forward, sampling, output processing, scheduling); beside it,
    the off arm's step (``rows`` tokens per step at its tok/s) -- the rest should match it, so a wait or a slowdown
    no phase counts shows up as the difference."""
    timed = work.get("steps_timed", 0)
    if not timed:
        return {}
    step = 1e3 * work.get("time_step_s", 0.0) / timed
    esamp = {ph: 1e3 * work.get(f"time_{ph}_s", 0.0) / timed for ph in SCHEDULER_PHASES}
    out = {"step": step, "esamp_on_scheduler": sum(esamp.values()), **{f"esamp_{k}": v for k, v in esamp.items()},
           "rest_sglang": step - sum(esamp.values()), "steps_timed": timed}
    out["off_arm_step"] = 1e3 * rows / off_tok_s
    return out


def compare(result: dict, baseline_path: Path) -> dict:
    """Change of each arm's median tok/s and of the on/off median against a committed result (printed)."""
    base = json.loads(Path(baseline_path).read_text())
    rows = {}
    for arm, s in result["tok_s"].items():
        if arm in base.get("tok_s", {}):
            b = base["tok_s"][arm]["median"]
            rows[arm] = {"baseline": b, "now": s["median"], "change": s["median"] / b - 1}
    rows["on/off"] = {"baseline": base["ratio_on_off"]["median"], "now": result["ratio_on_off"]["median"],
                      "change": result["ratio_on_off"]["median"] / base["ratio_on_off"]["median"] - 1}
    print(f"\nagainst {baseline_path}:\n| | baseline | now | change |\n|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v['baseline']:.3f} | {v['now']:.3f} | {100 * v['change']:+.1f} % |")
    return rows


def report(result: dict, output: Path) -> None:
    r, a = result, result["settings"]
    print(f"\n{a['model']}: {a['prompts']} prompts x n={a['n']}, {a['tokens']} tokens, "
          f"{'no filter' if a['no_filter'] else 'min-p %g' % a['min_p']}, update {'serial' if a['serial'] else 'async'}"
          f", {a['threads']} forward thread(s), {a['rounds']} rounds")
    print("| arm | tok/s median | min | max |\n|---|---|---|---|")
    for arm, s in r["tok_s"].items():
        print(f"| {arm} | {s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} |")
    print(f"on/off ratio: median {r['ratio_on_off']['median']:.3f} "
          f"(min {r['ratio_on_off']['min']:.3f}, max {r['ratio_on_off']['max']:.3f})")
    if r["ratio_off_stock"]:
        s = r["ratio_off_stock"]
        print(f"off/stock ratio (cost of the installed plugin): median {s['median']:.3f} "
              f"(min {s['min']:.3f}, max {s['max']:.3f})")
    if r.get("ratio_async_serial"):
        s = r["ratio_async_serial"]
        print(f"on (async) / on_serial: median {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})")
    print("ESamp ms per decode step: " + ", ".join(f"{k} {v:.2f}" for k, v in r["phase_ms_per_step"].items()))
    b = r.get("step_breakdown_ms") or {}
    if b:
        print(f"ESamp decode step {b['step']:.2f} ms wall = ESamp on the scheduler thread {b['esamp_on_scheduler']:.2f}"
              f" ({', '.join(f'{k[6:]} {v:.2f}' for k, v in b.items() if k.startswith('esamp_') and k != 'esamp_on_scheduler')})"
              f" + SGLang {b['rest_sglang']:.2f}" +
              (f"; the off arm's step {b['off_arm_step']:.2f} ms" if "off_arm_step" in b else ""))
    print(f"work: {r['work']}; candidates/row {r['candidates_per_row_mean']}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(r, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm in r["tok_s"]:
        ax1.plot([x["round"] for x in r["rounds"]], [x[arm]["tok_s"] for x in r["rounds"]], "o-", label=arm)
    ax1.set_xlabel("round")
    ax1.set_ylabel("decode tok/s")
    ax1.set_title(f"on/off {r['ratio_on_off']['median']:.3f} (median)")
    ax1.legend()
    ph = r["phase_ms_per_step"]
    ax2.barh(list(ph), list(ph.values()))
    ax2.set_xlabel("ms per ESamp decode step")
    ax2.set_title("ESamp phases (update: worker thread in async)" if not a["serial"] else "ESamp phases (serial)")
    fig.suptitle(f"{a['model']}: {a['prompts']}x n={a['n']}, {a['tokens']} tok", fontsize=9)
    fig.tight_layout()
    fig.savefig(output.with_suffix(".png"), dpi=120)
    print(f"saved {output} and {output.with_suffix('.png')}")


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed run still stops its servers
    result = run(a)
    default = f"benchmarks/results/bench_throughput_{'quick' if a.quick else a.model}" + \
              ("_nofilter" if a.no_filter else "") + ("_serial" if a.serial else "") + \
              ("_vs_serial" if a.compare_serial else "") + ".json"
    if a.compare:
        result["compare"] = {"baseline": a.compare, "rows": compare(result, Path(a.compare))}
    report(result, Path(a.output or default))
    w = result["work"]
    if w["updates"] == 0 or w["candidate_rows_reweighted"] == 0:
        print(f"error: the on arm did no ESamp work: {w}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
