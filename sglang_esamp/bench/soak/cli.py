"""Command line of ``python -m sglang_esamp.bench.soak`` (see the package docstring and docs/reliability.md).

Exit code: 0 when nothing unexpected happened, 1 when the report has a failure (unexpected status, 5xx, connection
error, server death, bank not settled, expired groups, ...), 2 when no soak could run (no healthy ESamp server).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import sys
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

import httpx

from ..server_options import add_server_source, server_arg_tokens
from ..quality.client import shipped_warm_start_exists
from ...serve.local_server import local_server_process
from .mix import Planner
from ...serve.server_probe import ProbeError, ServerProbe, config_of
from .report import (build_report, capabilities, format_table, health, new_run_id, probe_sessions, settle,
                     wait_quiet, SessionTarget)
from .runner import Runner

DEFAULT_OUTPUT = "benchmarks/results/soak/report.json"
LOOPBACK = ("127.0.0.1", "localhost")


def log(msg: str):
    print(f"[bench_soak] {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sglang_esamp.bench.soak",
                                description="Mixed traffic against one ESamp server: every request gets the status "
                                            "it expects, no 5xx, the server stays up and the distiller bank gives "
                                            "every slot back.")
    add_server_source(p, base_url_help="a running server on this machine (127.0.0.1 / localhost only), "
                                       "e.g. http://127.0.0.1:30000",
                      model_help="start a server for this model (e.g. smollm2-135m-instruct); it gets "
                                 "--esamp-warm-start shipped when one is shipped and no distiller flag is given")
    p.add_argument("--faults", metavar="SPEC", help="with --model: start the server with --esamp-debug-faults SPEC "
                                                    "(e.g. predict:0.05,update:0.05,nan_taps:0.02); step_errors "
                                                    "must then move, and still no 5xx")
    p.add_argument("--retract", action="store_true", help="with --model: start the server with "
                                                          "SGLANG_TEST_RETRACT=1 (decode requests are retracted "
                                                          "every few steps)")
    p.add_argument("--requests", type=int, default=500, help="requests to send (whole units: a group or a "
                                                              "session is never cut)")
    p.add_argument("--concurrency", type=int, default=32, help="async workers (units in flight)")
    p.add_argument("--time-limit", type=float, default=1800.0, metavar="S",
                   help="stop starting units after S seconds (in-flight ones finish)")
    p.add_argument("--seed", type=int, default=0, help="seed of the traffic mix")
    p.add_argument("--max-tokens", type=int, default=32, help="max new tokens of an ordinary request")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="report JSON file (the server log goes beside it)")
    p.add_argument("--settle-timeout", type=float, default=10.0, metavar="S",
                   help="how long after the last response the bank may take to settle before it counts as leaked")
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def check_args(p: argparse.ArgumentParser, args) -> None:
    if not (args.base_url or args.model):
        p.error("give --base-url URL or --model NAME")
    if args.base_url:
        u = urlparse(args.base_url)
        if u.scheme not in ("http", "https") or u.hostname not in LOOPBACK:
            p.error(f"--base-url: only a server on this machine (http://127.0.0.1:PORT or http://localhost:PORT) "
                    f"may be soaked, got {args.base_url!r}")
        if args.faults or args.retract or args.server_arg:
            p.error("--faults, --retract and --server-arg need --model (they change how the server is started)")
    if args.requests < 1 or args.concurrency < 1 or args.max_tokens < 1:
        p.error("--requests, --concurrency and --max-tokens must be >= 1")
    if not args.time_limit > 0 or not args.settle_timeout > 0:
        p.error("--time-limit and --settle-timeout must be > 0")


@contextlib.contextmanager
def server(args, log_dir: Path):
    if not args.model:
        yield args.base_url.rstrip("/"), None
        return
    extra: List[str] = server_arg_tokens(args.server_arg)
    flags = {a.split("=", 1)[0] for a in extra}
    if "--esamp-warm-start" not in flags and not flags & {"--esamp-distiller", "--esamp-taps"} and \
            shipped_warm_start_exists(args.model):
        extra += ["--esamp-warm-start", "shipped"]
    if args.faults:
        extra += ["--esamp-debug-faults", args.faults]
    env = {"SGLANG_TEST_RETRACT": "1"} if args.retract else None
    log_path = log_dir / "server.log"
    log(f"starting server for {args.model} {' '.join(extra)} (log: {log_path})")
    with local_server_process(["--model-path", args.model, *extra], log_path, env, 900.0) as (base, proc):
        yield base, proc


def soak(args, base: str, proc, command: str) -> dict:
    http = httpx.Client(base_url=base, timeout=60.0)
    probe = ServerProbe(base, timeout_s=60.0)
    try:
        if not probe.health(timeout_s=30).ok:
            raise RuntimeError(f"no healthy server at {base}")
        try:
            probe.esamp_stats()
        except ProbeError as e:
            raise RuntimeError(f"{base} has no /esamp/stats (not an ESamp server?): {e}") from None
        run_id = new_run_id()
        sessions = probe_sessions(http, run_id)
        before = wait_quiet(probe)
        config = config_of(before)
        caps = capabilities(before, sessions)
        faults = args.faults or config.get("debug_faults")
        units = Planner(random.Random(args.seed), args.max_tokens, caps, run_id).plan(args.requests)
        log(f"{base}: {sum(len(u.calls) for u in units)} requests in {len(units)} units at concurrency "
            f"{args.concurrency}; sessions {sessions['mode']} (rejects unissued ids: "
            f"{sessions['rejects_unissued']}), session pool {caps.session_pool}; faults {faults or 'none'}")
        runner = Runner(base, caps, args.concurrency, args.request_timeout, run_id, args.time_limit,
                        progress=not args.no_progress)
        load = asyncio.run(runner.run(units))
        session_max = config.get("session_max")
        target = SessionTarget(before, runner.registered, 4 if session_max is None else int(session_max))
        settle_info = settle(probe, target, load["last_response"], args.settle_timeout)
        alive = health(probe, proc)
        after_total = settle_info.pop("total")
        if alive["alive"]:
            with contextlib.suppress(ProbeError):
                after_total = probe.esamp_total()
        settings = {"requests": args.requests, "concurrency": args.concurrency, "time_limit_s": args.time_limit,
                    "seed": args.seed, "max_tokens": args.max_tokens, "faults": faults, "retract": args.retract,
                    "model": args.model, "server_args": args.server_arg, "settle_timeout_s": args.settle_timeout}
        keep = ("bank_slots", "session_max", "session_ttl_s", "default_beta", "warm_start", "update_mode",
                "group_linger_s", "debug_faults")
        server_facts = {"base_url": base, "self_started": bool(args.model), "model_path": probe.model_info().get("model_path"),
                        "esamp_config": {k: config.get(k) for k in keep if k in config}}
        facts = {"peaks": runner.peaks, "sessions": {
            "pool": caps.session_pool, "starts": runner.session_starts, "with_slot": len(runner.registered),
            "id_mismatches": runner.session_id_mismatches, "unissued_sent": runner.unissued}}
        return build_report(settings=settings, server=server_facts, session_protocol=sessions, load=load,
                            results=runner.results, runner_facts=facts, before=before, settle_info=settle_info,
                            after_total=after_total, alive=alive, faults=faults, command=command)
    finally:
        http.close()
        probe.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed run still stops the server it started
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench_soak", *argv]))
    try:
        with server(args, out.parent) as (base, proc):
            rep = soak(args, base, proc, command)
    except (RuntimeError, TimeoutError) as e:
        log(str(e))
        return 2
    out.write_text(json.dumps(rep, indent=1, sort_keys=False) + "\n")
    print(format_table(rep), flush=True)
    log(f"report: {out}")
    return 0 if rep["ok"] else 1
