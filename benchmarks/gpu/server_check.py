"""The real SGLang server with ESamp on a GPU, CUDA graphs on (issue #39): one prepared run for the lent machine.

Run it through ``bash benchmarks/gpu/server_check.sh`` (device) or ``... --dry-run`` (CPU, under a minute). Steps:

1. **env**: GPU, Python, torch/Triton/transformers versions, whether nvcc is there (``env`` in the summary).
2. **install** the carried bundle (``gpu_bundle/``, see benchmarks/gpu/bundle.py) into a temp dir; every later
   process gets ``PYTHONPATH=<tmp>/site``, which loads the CUDA stand-in for ``sgl_kernel``
   (``SGLANG_ESAMP_CUDA_STANDIN=1``) and the ESamp plugin in SGLang's spawned processes too. An import check of
   SGLang's server modules runs beside step 3 and is read before any server starts, so a missing package fails
   there, named, in seconds.
3. **model**: a random-weight model from the bundled Qwen2.5-0.5B config (seed 0, bf16, ``save_pretrained``) with
   the bundled tokenizer -- no weights travel. (The config is this project's converted Qwen2.5-Coder-0.5B: untied
   LM head, 0.63 B parameters.) Random weights give flat next-token distributions, so min-p 0.05 keeps many
   candidates: ESamp's per-row work is larger than with the real model.
4. **servers**, started together, each ``python -m sglang_esamp.launch_server`` with ``--attention-backend triton
   --sampling-backend pytorch`` (no flashinfer, no sgl-kernel), ``--disable-radix-cache``, 16 bank slots, async
   update, ``--mem-fraction-static 0.5 --max-total-tokens 131072`` (four servers share one GPU; the cap keeps a
   late starter's KV budget positive whatever the others took first):
   ``graph`` ESamp, CUDA graphs on (``SGLANG_ESAMP_ALLOW_CUDA_GRAPH=1`` lifts the refusal, logged), step trace on;
   ``eager`` the same with ``--disable-cuda-graph``; ``bench`` ESamp, graphs on, no trace (a trace copies every
   step to the host); ``stock`` the same with ``SGLANG_ESAMP=0``.
5. **seeded**: one seeded ESamp request (n=4, ``sampling_seed``, beta 0.25, min-p 0.05) to ``graph`` and to
   ``eager``: the tokens must match; where they do not, the traced candidate logits of the steps before the first
   difference are compared (tolerance ``LOGIT_TOL``). Then ``/esamp/stats`` of ``graph``: 0 tap misses, nonzero
   ESamp steps, updates and reweighted rows, and decode batches run as graphs in its log (it logs every 4th
   decode batch; without a replayed batch, 0 tap misses would prove nothing).
6. **bench**: ``python -m sglang_esamp.bench.throughput`` at 16 x n=8, 128 tokens, min-p 0.05, its on / off /
   stock arms served by ``bench`` and ``stock`` (``--esamp-url`` / ``--stock-url``: the running servers, as
   started above), then ``/esamp/stats`` of ``bench``: 0 tap misses, decode batches replayed.
7. **out**: ``$OUT/gpu_server_check.json`` (every step's result), the bench JSON + PNG files, ``logs.tar.gz``
   (server logs and traces) -- at most 8 files, as the device returns them.

SIGTERM (the lease's watchdog, benchmarks/gpu/lease.py) ends the step in progress: the servers are stopped and
what ran is saved. If the servers do not come up and their logs point at a kernel (the stand-in, a JIT build),
they are started once more with ``SGLANG_FORCE_FUSED_OP_BACKEND=native`` (SGLang's own switch: every fused op on
its torch path). ``--dry-run`` runs steps 1-3 for real on CPU (install laid out for cp312 beside this interpreter,
a tiny model), prints the command lines of 4-6 and has SGLang's and bench_throughput's own parsers take them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error   # the standard library's HTTP, not serve.server_probe: this process runs on the device's
import urllib.request  # bare Python (no httpx) and imports nothing of the package before the bundle is installed
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle as gpu_bundle  # noqa: E402

PROMPT = "<|im_start|>user\nInvent a name for a new planet and describe it.<|im_end|>\n<|im_start|>assistant\n"
SEEDED_PARAMS = {"temperature": 1.0, "min_p": 0.05, "max_new_tokens": 24, "n": 4, "ignore_eos": True,
                 "sampling_seed": 1234, "esamp": {"beta": 0.25}}
LOGIT_TOL = 0.1   # |graph - eager| of a candidate logit (bf16 model: about 1-2 ulps at |logit| 8-16)
BENCHES = (("16x8", 16),)                           # the bar: 16 prompts x n=8
BENCH_ARGS = ["--n", "8", "--tokens", "128", "--min-p", "0.05", "--rounds", "3"]
SERVER_ARGS = ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--dtype", "bfloat16",
               "--mem-fraction-static", "0.5", "--max-total-tokens", "131072", "--disable-radix-cache",
               "--esamp-bank-slots", "16", "--esamp-update-mode", "async", "--log-level", "info"]
# SGLang 0.5.23 graphs decode (full) and, on CUDA, prefill (breakable) by default; its graph flags are per phase
# (a bare --cuda-graph-max-bs is ambiguous there and refused)
GRAPH_ARGS = ["--cuda-graph-max-bs-decode", "128"]   # 16 prompts x n=8 decode as one captured batch; defaults else
SEEDED_GRAPH_ARGS = ["--cuda-graph-max-bs-decode", "16",   # the seeded request decodes 4 rows: fewer graphs
                     "--disable-prefill-cuda-graph",       # decode replay alone against eager (bench: both phases)
                     "--decode-log-interval", "4"]         # its 24 steps log whether they ran as graphs (default 40)
EAGER_ARGS = ["--disable-cuda-graph"]
IMPORT_CHECK = ("sglang.srt.entrypoints.http_server", "sglang.srt.managers.scheduler",
                "sglang.srt.model_executor.model_runner", "sglang.srt.models.qwen2",
                "sglang.srt.layers.attention.triton_backend", "sglang_esamp.plugin")
AFTER_START_S = 120.0  # what the seeded request (~20 s), the 16 x 8 bench (~70 s) and the stop need after start-up
KERNEL_HINTS = ("sgl_kernel", "ESamp CUDA stand-in", "JIT kernel", "nvcc", "load_jit")


def log(msg: str) -> None:
    print(f"[gpu-server] {msg}", flush=True)


# ------------------------------------------------------------------ steps 1-3


def env_report(py: str) -> Dict:
    code = ("import json, sys, platform\nout = {'python': sys.version.split()[0], 'platform': platform.platform()}\n"
            "for m in ('torch', 'triton', 'transformers', 'tokenizers', 'torchvision', 'numpy'):\n"
            "    try:\n        out[m] = __import__(m).__version__\n    except Exception as e:\n"
            "        out[m] = 'missing: ' + type(e).__name__\n"
            "try:\n    import torch\n    out['cuda'] = torch.cuda.is_available()\n"
            "    out['device'] = torch.cuda.get_device_name(0) if out['cuda'] else None\n"
            "    out['torch_cuda'] = torch.version.cuda\nexcept Exception as e:\n    out['cuda'] = False\n"
            "print(json.dumps(out))")
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}
    out["nvcc"] = shutil.which("nvcc")
    out["nvidia_smi"] = _run_text(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                   "--format=csv,noheader"])
    return out


def _run_text(cmd: List[str]) -> Optional[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def import_check(py: str, env: Dict[str, str]) -> Dict:
    code = ("import importlib, json, time\nt = time.time()\nbad = {}\n"
            f"for m in {list(IMPORT_CHECK)!r}:\n"
            "    try:\n        importlib.import_module(m)\n    except BaseException as e:\n"
            "        bad[m] = f'{type(e).__name__}: {e}'\n"
            "import sgl_kernel\n"
            "print(json.dumps({'failed': bad, 'seconds': round(time.time() - t, 1), "
            "'sgl_kernel_stand_in': bool(getattr(sgl_kernel, '__esamp_cuda_standin__', False))}))")
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr[-3000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = not out["failed"]
    return out


def dry_tokenizer_source():
    """Without a bundle (the dry run on a CI machine): the Qwen2.5 tokenizer and config when this machine has the
    model, else SmolLM2's (Llama; always installed here) -- the dry run needs a config and a tokenizer, not Qwen."""
    try:
        return gpu_bundle.tokenizer_dir(), gpu_bundle.TOKENIZER_MODEL
    except Exception as e:  # noqa: BLE001  (not installed: bash ci/setup_env.sh --bench)
        from sglang_esamp.models import resolve_model

        log(f"no {gpu_bundle.TOKENIZER_MODEL} here ({type(e).__name__}); the dry run uses smollm2-135m-instruct")
        return Path(resolve_model("smollm2-135m-instruct")), "smollm2-135m-instruct"


def make_model(config_dir: Path, out: Path, tiny: bool, device: str, seed: int = 0) -> Dict:
    """A seeded random-weight Qwen2 model from ``config_dir/config.json``, saved in bf16 with the tokenizer files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.time()
    cfg = AutoConfig.from_pretrained(str(config_dir))
    if tiny:   # the dry run: the same architecture and vocabulary, a few MB of weights
        cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 64, 128, 2
        cfg.num_attention_heads, cfg.num_key_value_heads = 4, 2
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = cfg.layer_types[:2]
        cfg.max_window_layers = 2
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for f in gpu_bundle.TOKENIZER_FILES:
        if (config_dir / f).exists() and f != "config.json":
            shutil.copy2(config_dir / f, out / f)
    params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"path": str(out), "params": params, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
            "vocab": cfg.vocab_size, "tied": bool(getattr(cfg, "tie_word_embeddings", False)),
            "seconds": round(time.time() - t0, 1)}


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_plan(model: str, logs: Path, native_ops: bool = False) -> Dict[str, Dict]:
    """name -> {"argv", "env"}: the four servers of steps 4-6."""
    base_env = {"SGLANG_ESAMP_CUDA_STANDIN": "1", "SGLANG_ESAMP_ALLOW_CUDA_GRAPH": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if native_ops:
        base_env["SGLANG_FORCE_FUSED_OP_BACKEND"] = "native"
    specs = {"graph": (SEEDED_GRAPH_ARGS, {"SGLANG_ESAMP_STEP_TRACE": str(logs / "trace_graph.jsonl")}),
             "eager": (EAGER_ARGS, {"SGLANG_ESAMP_STEP_TRACE": str(logs / "trace_eager.jsonl")}),
             "bench": (GRAPH_ARGS, {}),
             "stock": (GRAPH_ARGS, {"SGLANG_ESAMP": "0"})}
    plan = {}
    for name, (extra, env) in specs.items():
        port = free_port()
        argv = [sys.executable, "-m", "sglang_esamp.launch_server", "--model-path", model, "--host", "127.0.0.1",
                "--port", str(port), *SERVER_ARGS, *extra]
        plan[name] = {"argv": argv, "env": {**base_env, **env}, "base": f"http://127.0.0.1:{port}",
                      "log": str(logs / f"server_{name}.log")}
    return plan


def refused_server_flags(argv: List[str]) -> Optional[str]:
    """None when ``python -m sglang_esamp.launch_server`` would take ``argv`` (SGLang's flags and ESamp's), else
    argparse's message. Needs SGLang importable: the dry run's check of the plan."""
    import contextlib
    import io

    from sglang_esamp.launch_server import _build_help_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _build_help_parser().parse_args(argv)
    except SystemExit as e:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {e.code}"
    return None


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def _post(url: str, body: Dict, timeout: float = 600.0) -> Dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Servers:
    def __init__(self, plan: Dict[str, Dict], child_env: Dict[str, str]):
        self.plan, self.child_env, self.procs, self.logs = plan, child_env, {}, []

    def start(self, timeout_s: float) -> Dict[str, Dict]:
        for name, s in self.plan.items():
            Path(s["log"]).parent.mkdir(parents=True, exist_ok=True)
            logf = open(s["log"], "w")
            self.logs.append(logf)
            self.procs[name] = subprocess.Popen(s["argv"], stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                                env={**self.child_env, **s["env"]}, start_new_session=True)
        t0, status = time.time(), {n: {"up": False} for n in self.plan}
        while time.time() - t0 < timeout_s and not all(v["up"] or "exit" in v for v in status.values()):
            for name, s in self.plan.items():
                st = status[name]
                if st["up"] or "exit" in st:
                    continue
                if self.procs[name].poll() is not None:
                    st["exit"] = self.procs[name].returncode
                    st["log_tail"] = Path(s["log"]).read_text(errors="replace")[-3000:]
                    continue
                try:
                    if _get(s["base"] + "/health", timeout=2)[0] == 200:
                        st.update(up=True, seconds=round(time.time() - t0, 1))
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            time.sleep(1)
        for name, st in status.items():
            if not st["up"] and "exit" not in st:
                st["timeout"] = timeout_s
                st["log_tail"] = Path(self.plan[name]["log"]).read_text(errors="replace")[-3000:]
        return status

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for f in self.logs:
            f.close()
        self.procs, self.logs = {}, []


# ------------------------------------------------------------------ step 5: seeded graph vs eager


def _outputs(resp) -> List[Dict]:
    return resp if isinstance(resp, list) else [resp]


def _trace_rows(path: Path) -> Dict[str, List[Dict]]:
    rows: Dict[str, List[Dict]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.setdefault(r["rid"], []).append(r)
    return rows


def _rows_for(outputs: List[Dict], trace: Dict[str, List[Dict]]):
    ids = [o.get("meta_info", {}).get("id") for o in outputs]
    if ids and all(i in trace for i in ids):
        return [trace[i] for i in ids], "meta_info.id"
    order = list(trace)          # first appearance = the order the siblings joined the batch
    return [trace[r] for r in order[:len(outputs)]], "trace order"


def compare_seeded(graph_resp, eager_resp, graph_trace: Dict[str, List[Dict]],
                   eager_trace: Dict[str, List[Dict]], tol: float = LOGIT_TOL) -> Dict:
    """Tokens of the n seeded siblings, graph vs eager; where they differ, the traced candidate logits of the steps
    before the first difference (same candidates, |delta| <= tol) decide."""
    g_out, e_out = _outputs(graph_resp), _outputs(eager_resp)
    key = "output_ids" if all("output_ids" in o for o in g_out + e_out) else "text"
    same = [g.get(key) == e.get(key) for g, e in zip(g_out, e_out)]
    res = {"compared": key, "siblings": len(g_out), "same_tokens": all(same) and len(g_out) == len(e_out),
           "per_sibling_same": same, "tol": tol}
    g_rows, how_g = _rows_for(g_out, graph_trace)
    e_rows, how_e = _rows_for(e_out, eager_trace)
    res["trace_mapping"] = sorted({how_g, how_e})
    max_delta, steps, first_diff, cand_mismatch = 0.0, 0, [], 0
    for gr, er in zip(g_rows, e_rows):
        diff_at = None
        for k, (a, b) in enumerate(zip(gr, er)):
            if a["cand_ids"] != b["cand_ids"]:
                cand_mismatch += 1
                diff_at = k
                break
            d = max((abs(x - y) for x, y in zip(a["cand_logits"], b["cand_logits"])), default=0.0)
            max_delta = max(max_delta, d)
            steps += 1
            if a["token"] != b["token"]:
                diff_at = k
                break
        first_diff.append(diff_at)
    res.update(traced_steps_compared=steps, max_abs_logit_delta=max_delta, first_token_difference=first_diff,
               candidate_set_mismatches=cand_mismatch)
    res["ok"] = res["same_tokens"] or (steps > 0 and cand_mismatch == 0 and max_delta <= tol)
    return res


def stats_check(base: str) -> Dict:
    status, body = _get(base + "/esamp/stats", timeout=30)
    total = json.loads(body).get("total", {})
    keys = ("tap_misses", "decode_steps", "esamp_steps", "updates", "candidate_rows_reweighted", "step_errors",
            "sampled_rows")
    out = {k: total.get(k) for k in keys}
    out["ok"] = (out["tap_misses"] == 0 and (out["esamp_steps"] or 0) > 0 and (out["updates"] or 0) > 0
                 and (out["candidate_rows_reweighted"] or 0) > 0)
    return out


def graph_evidence(log_path: Path) -> Dict:
    text = Path(log_path).read_text(errors="replace") if Path(log_path).exists() else ""
    return {"capture_lines": len(re.findall(r"[Cc]apture cuda graph", text)),
            "decode_batches_graph_true": len(re.findall(r"cuda graph: True", text)),
            "decode_batches_graph_false": len(re.findall(r"cuda graph: False", text))}


# ------------------------------------------------------------------ step 6: bench_throughput against our servers


def make_bench_cmds(plan: Dict[str, Dict], model: str, out: Path) -> Dict[str, List[str]]:
    return {tag: [sys.executable, "-m", "sglang_esamp.bench.throughput",
                  *bench_argv(model, prompts, plan["bench"]["base"], plan["stock"]["base"], out / f"bench_{tag}.json")]
            for tag, prompts in BENCHES}


def bench_argv(model: str, prompts: int, esamp_url: str, stock_url: str, output: Path) -> List[str]:
    return ["--model", model, "--prompts", str(prompts), *BENCH_ARGS, "--esamp-url", esamp_url,
            "--stock-url", stock_url, "--output", str(output)]


def _bench_summary(path: Path) -> Dict:
    if not path.exists():
        return {"missing": str(path)}
    data = json.loads(path.read_text())
    keep = {}
    for k in ("ratios", "ratio_on_off", "ratio_off_stock", "tok_s", "arms", "summary"):
        if k in data:
            keep[k] = data[k]
    return keep or {"keys": sorted(data)[:20]}


# ------------------------------------------------------------------ orchestration


def run(a) -> int:
    t_start = time.time()
    out = Path(a.out).resolve()
    work = Path(a.work).resolve()
    logs = work / "logs"
    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    summary: Dict = {"dry_run": a.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
    steps = summary["steps"]

    def left() -> float:
        return a.deadline_s - (time.time() - t_start)

    def save() -> None:
        summary["seconds"] = round(time.time() - t_start, 1)
        (out / "gpu_server_check.json").write_text(json.dumps(summary, indent=1, default=str))

    py = sys.executable
    log(f"1. env ({py})")
    steps["env"] = env_report(py)
    log(json.dumps(steps["env"]))

    log("2. install the bundle")
    bundle = Path(a.bundle).resolve()
    child_env = dict(os.environ)
    tok_dir: Optional[Path] = None
    import_future = None
    if (bundle / gpu_bundle.ARCHIVE).exists():
        inst = gpu_bundle.install(bundle, work / "esamp", ROOT, cross=a.dry_run)
        steps["install"] = inst
        tok_dir = Path(inst["tokenizer"])
        if not a.dry_run:   # cp312 wheels: importable only by the device's interpreter
            child_env["PYTHONPATH"] = inst["site"] + (os.pathsep + os.environ["PYTHONPATH"]
                                                      if os.environ.get("PYTHONPATH") else "")
            child_env["SGLANG_ESAMP_CUDA_STANDIN"] = "1"
            child_env.pop("SGLANG_USE_CPU_ENGINE", None)
            if a.keep_jit:
                child_env["SGLANG_ESAMP_CUDA_STANDIN_JIT"] = "1"
            # the import check (~20 s) runs beside the model build; its verdict is read before any server starts
            import_future = ThreadPoolExecutor(max_workers=1).submit(import_check, py, child_env)
    else:
        if not a.dry_run:
            steps["install"] = {"error": f"no {bundle / gpu_bundle.ARCHIVE}: carry gpu_bundle"}
            save()
            log(f"FAIL: {steps['install']['error']}")
            return 1
        steps["install"] = {"skipped": f"no {bundle / gpu_bundle.ARCHIVE} (bash benchmarks/gpu/bundle.sh builds it)"}
        log(f"skip: {steps['install']['skipped']}")
    if tok_dir is None:
        tok_dir, steps["tokenizer_source"] = dry_tokenizer_source()

    log("3. random-weight model")
    model_dir = work / "model"
    steps["model"] = make_model(tok_dir, model_dir, tiny=a.dry_run,
                                device="cuda" if (not a.dry_run and steps["env"].get("cuda")) else "cpu")
    log(json.dumps(steps["model"]))
    save()
    if import_future is not None:
        steps["import_check"] = ic = import_future.result()
        log(f"import check: {json.dumps(ic)[:2000]}")
        if not ic["ok"]:
            save()
            log("FAIL: SGLang's server modules do not import with the bundle (see import_check)")
            return 1

    plan = server_plan(str(model_dir), logs, native_ops=a.native_ops)
    bench_cmds = make_bench_cmds(plan, str(model_dir), out)
    (work / "tmp").mkdir(exist_ok=True)
    bench_env = {**child_env, "TMPDIR": str(work / "tmp")}   # bench_throughput's own temp dirs stay in the work dir
    if a.dry_run:
        log("4-6. (dry run) the servers and benches it would run:")
        for name, srv in plan.items():
            envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in srv["env"].items())
            log(f"  server {name}: {envs} {shlex.join(srv['argv'])}")
        log(f"  seeded request to graph and eager: {json.dumps({'text': PROMPT, 'sampling_params': SEEDED_PARAMS})}")
        steps["plan"] = {"servers": {n: {"argv": srv["argv"], "env": srv["env"]} for n, srv in plan.items()},
                         "benches": bench_cmds}
        from sglang_esamp.bench import throughput as bench_throughput

        failed = False
        for name, srv in plan.items():   # each server's flags parse as SGLang's and ESamp's own CLI
            refused = refused_server_flags(srv["argv"][3:])
            steps["plan"]["servers"][name]["parsed"] = refused is None
            if refused:
                failed = True
                steps["plan"]["servers"][name]["refused"] = refused
                log(f"FAIL: server {name} (dry): the launcher refuses its flags: {refused}")
        for tag, cmd in bench_cmds.items():   # each bench command parses as bench_throughput's own CLI
            log(f"  bench {tag}: {shlex.join(cmd)}")
            try:
                parsed = bench_throughput.parse_args(cmd[3:])
                steps["plan"][f"bench_{tag}_dry"] = {"rc": 0, "prompts": parsed.prompts,
                                                     "esamp_url": parsed.esamp_url, "stock_url": parsed.stock_url}
            except SystemExit as e:
                failed = True
                steps["plan"][f"bench_{tag}_dry"] = {"rc": e.code}
                log(f"FAIL: bench {tag} (dry): bench_throughput refuses its arguments")
        # the logs archive as a device run leaves it, holding the plan here (the lease carries it back)
        (logs / "plan.json").write_text(json.dumps(steps["plan"], indent=1))
        with tarfile.open(out / "logs.tar.gz", "w:gz") as tf:
            tf.add(logs, arcname="logs")
        if failed:
            save()
            return 1
        save()
        log(f"dry run done in {time.time() - t_start:.0f}s: {out / 'gpu_server_check.json'}")
        return 0

    ok = True
    servers = Servers(plan, child_env)
    try:
        log("4. servers: " + ", ".join(plan))
        status = servers.start(timeout_s=max(60.0, left() - AFTER_START_S))
        steps["servers"] = status
        if not any(_pair_up(status, pair) for pair in PAIRS.values()):
            tails = " ".join(v.get("log_tail", "") for v in status.values())
            if not a.native_ops and any(h in tails for h in KERNEL_HINTS) and left() > AFTER_START_S + 90:
                servers.stop()
                log("servers failed on a kernel; once more with SGLANG_FORCE_FUSED_OP_BACKEND=native")
                for name, s in plan.items():
                    os.replace(s["log"], s["log"].replace(".log", ".first.log"))
                plan = server_plan(str(model_dir), logs, native_ops=True)
                bench_cmds = make_bench_cmds(plan, str(model_dir), out)
                servers = Servers(plan, child_env)
                status = servers.start(timeout_s=max(60.0, left() - AFTER_START_S))
                steps["servers_native_ops"] = status
        if not all(v["up"] for v in status.values()):
            log("FAIL: servers did not all come up: " + json.dumps(
                {k: {kk: vv for kk, vv in v.items() if kk != "log_tail"} for k, v in status.items()}))
            ok = False
        save()
        # each pair of servers that is up runs its step: a server that failed must not hide the others' results
        for step, run_step in (("seeded", lambda: seeded_step(plan, logs, steps, left)),
                               ("bench", lambda: bench_step(plan, bench_cmds, bench_env, logs, out, steps, left))):
            if not _pair_up(status, PAIRS[step]):
                steps[step] = {"skipped": f"needs servers {PAIRS[step]} up"}
                continue
            try:
                ok = run_step() and ok
            except Exception as ex:  # noqa: BLE001  (one device lease: record and go on to the next step)
                steps[f"{step}_error"] = f"{type(ex).__name__}: {ex}"
                ok = False
                log(f"FAIL: {step}: {steps[f'{step}_error']}")
            save()
    except Exception as ex:  # noqa: BLE001  (Terminated included: record and keep what ran)
        steps["error"] = f"{type(ex).__name__}: {ex}"
        ok = False
        log(f"FAIL: {steps['error']}")
    finally:
        servers.stop()
        with tarfile.open(out / "logs.tar.gz", "w:gz") as tf:
            tf.add(logs, arcname="logs")
        summary["ok"] = ok
        save()
    log(f"{'done' if ok else 'FAILED'} in {time.time() - t_start:.0f}s: {out}")
    return 0 if ok else 1


PAIRS = {"seeded": ("graph", "eager"), "bench": ("bench", "stock")}


def _pair_up(status: Dict[str, Dict], pair) -> bool:
    return all(status.get(n, {}).get("up") for n in pair)


def seeded_step(plan: Dict, logs: Path, steps: Dict, left) -> bool:
    """Step 5: the seeded request, graph vs eager, and the graph server's counters."""
    log("5. seeded ESamp request, graph vs eager")
    body = {"text": PROMPT, "sampling_params": SEEDED_PARAMS}
    g = _post(plan["graph"]["base"] + "/generate", body, timeout=min(180.0, max(30.0, left())))
    e = _post(plan["eager"]["base"] + "/generate", body, timeout=min(180.0, max(30.0, left())))
    time.sleep(1)   # the trace lines of the last step
    steps["seeded"] = cmp = compare_seeded(g, e, _trace_rows(logs / "trace_graph.jsonl"),
                                           _trace_rows(logs / "trace_eager.jsonl"))
    log(json.dumps(cmp))
    steps["stats_graph"] = st = stats_check(plan["graph"]["base"])
    st["log"] = graph_evidence(Path(plan["graph"]["log"]))
    # 0 tap misses proves something only if decode steps were replayed from graphs
    st["replayed"] = st["log"]["decode_batches_graph_true"] > 0
    st["ok"] = st["ok"] and st["replayed"]
    log(f"stats (graph server): {json.dumps(st)}")
    return cmp["ok"] and st["ok"]


def bench_step(plan: Dict, bench_cmds: Dict, bench_env: Dict, logs: Path, out: Path, steps: Dict, left) -> bool:
    """Step 6: bench_throughput against the bench and stock servers, then the bench server's counters."""
    log("6. bench_throughput")
    ok = True
    for tag, cmd in bench_cmds.items():
        if left() < 60:
            steps[f"bench_{tag}"] = {"skipped": f"{left():.0f}s left"}
            ok = False
            continue
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env={**bench_env, **plan["bench"]["env"]},
                              capture_output=True, text=True, timeout=max(30, left() - 20))
        (logs / f"bench_{tag}.log").write_text(proc.stdout + proc.stderr)
        steps[f"bench_{tag}"] = {"rc": proc.returncode, "seconds": round(time.time() - t0, 1),
                                 "result": _bench_summary(out / f"bench_{tag}.json"),
                                 "tail": (proc.stdout + proc.stderr)[-1500:]}
        log(f"bench {tag}: rc {proc.returncode} in {time.time() - t0:.0f}s")
        ok = ok and proc.returncode == 0
    steps["stats_bench"] = sb = stats_check(plan["bench"]["base"])
    sb["log"] = graph_evidence(Path(plan["bench"]["log"]))
    sb["replayed"] = sb["log"]["decode_batches_graph_true"] > 0
    log(f"stats (bench server): {json.dumps(sb)}")
    return ok and sb["tap_misses"] == 0 and sb["replayed"]


class Terminated(Exception):
    """SIGTERM from the lease's watchdog: raised in the main thread so the servers stop and the summary is saved."""


def _on_sigterm(signum, frame):
    raise Terminated("SIGTERM (the lease's watchdog: this stage ran out of time)")


def _run_and_clean(a) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(a)
    finally:
        if a.work_auto:
            shutil.rmtree(a.work, ignore_errors=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="benchmarks/gpu/server_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU: steps 1-3 for real, the rest printed")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks/results/gpu_server"))
    p.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp)")
    p.add_argument("--bundle", default=str(gpu_bundle.BUNDLE_DIR))
    p.add_argument("--deadline-s", type=float, default=540.0, help="stop starting new steps after this")
    p.add_argument("--native-ops", action="store_true",
                   help="SGLANG_FORCE_FUSED_OP_BACKEND=native from the start (every fused op on its torch path)")
    p.add_argument("--keep-jit", action="store_true",
                   help="keep SGLang's nvcc-built JIT kernels (SGLANG_ESAMP_CUDA_STANDIN_JIT=1)")
    a = p.parse_args(argv)
    a.work_auto = a.work is None
    if a.work_auto:
        import tempfile

        a.work = tempfile.mkdtemp(prefix="esamp-gpu-server-")
    return _run_and_clean(a)


if __name__ == "__main__":
    sys.exit(main())
