"""Before and after the load: what the server supports (``probe``), the settle poll (``settle``), the verdict and
the report (``build_report``: JSON-ready; ``format_table``: what is printed).

Settling: after the last response the bank must hold only the slots kept by sessions and no group may be live.
When the server exposes a count of live sessions (one of ``LIVE_SESSION_COUNTERS``) that count is the target.
Otherwise it is derived: the occupancy before the load plus the session keys of this run that got a slot, at most
the room left under ``session_max``. That is exact while the server neither evicted nor overflowed a session
during the run (``sessions_evicted`` / ``session_overflows`` unchanged); if it did, a re-registered session could
not be told from a leaked slot, so the target is an upper bound and the report says ``exact: false``.
"""
from __future__ import annotations

import math
import statistics
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

import httpx

from ...serve.server_probe import ServerProbe, config_of, total_of
from .mix import Capabilities
from .runner import Result

SCHEMA = "sglang-esamp/bench-soak/1"
LIVE_SESSION_COUNTERS = ("sessions_live", "sessions_held", "sessions_active", "session_slots")
GAUGES = {"bank_occupancy", "groups_live", "bank_slots", "candidates_per_row_max"} | set(LIVE_SESSION_COUNTERS)
# the figures the table shows (any other counter with one of these words in its name is shown too)
SHOWN = ("updates", "esamp_steps", "decode_steps", "rows_trained", "candidate_rows_reweighted", "groups_acquired",
         "groups_released", "groups_expired", "bank_full_fallbacks", "members_left_before_decode", "step_errors",
         "error_resets", "nan_resets", "nonfinite_losses", "tap_misses", "mixed_batches_skipped", "sessions_evicted",
         "session_overflows", "faults_injected")
SHOWN_WORDS = ("diverg", "reset", "nonfinite", "dropped", "fault", "error", "session", "expired")
RAISING_FAULTS = ("predict", "sample", "update")


# ---------------------------------------------------------------------------------------------------------- probes
def live_sessions(total: Dict[str, float]) -> Optional[Tuple[str, float]]:
    for name in LIVE_SESSION_COUNTERS:
        if name in total:
            return name, total[name]
    return None


def _post_probe(http: httpx.Client, session: str, max_new_tokens: int):
    body = {"text": "Hi", "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 1.0,
                                              "esamp": {"beta": 0.25, "session": session}}}
    r = http.post("/generate", json=body, timeout=300)
    try:
        data = r.json()
    except ValueError:
        data = r.text
    err = data.get("error") if isinstance(data, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    outs = data if isinstance(data, list) else [data]
    metas = [(o.get("meta_info") or {}).get("esamp") for o in outs if isinstance(o, dict)]
    metas = [m for m in metas if isinstance(m, dict)]
    return r.status_code, param, metas


def probe_sessions(http: httpx.Client, run_id: str) -> dict:
    """How this server treats ``esamp.session``. ``issued``: ``"new"`` starts a session and
    ``meta_info.esamp.session`` carries the server's id; ``legacy``: any non-empty key is a session key.
    The probes ask for one token: a request that never decodes takes no slot, so a legacy server keeps nothing."""
    status_u, param_u, _ = _post_probe(http, f"soak-unissued-probe-{run_id}", 1)
    rejects = status_u == 400 and param_u == "esamp.session"
    status_n, param_n, metas = _post_probe(http, "new", 1)
    ids = {m.get("session") for m in metas} - {None}
    if rejects and status_n == 200 and not ids:      # an id may only be reported once the request decodes
        status_n, param_n, metas = _post_probe(http, "new", 4)
        ids = {m.get("session") for m in metas} - {None}
    issued = status_n == 200 and len(ids) == 1 and next(iter(ids)) != "new"
    probe_ids = sorted(ids) if issued else []
    held = [i for i in probe_ids if any(m.get("slot") is not None for m in metas)]
    return {"mode": "issued" if issued else "legacy", "issues_ids": issued, "rejects_unissued": rejects,
            "probe_unissued_status": status_u, "probe_unissued_param": param_u, "probe_new_status": status_n,
            "probe_new_param": param_n, "probe_session_ids": probe_ids, "probe_sessions_with_slot": held}


def wait_quiet(probe: ServerProbe, timeout_s: float = 60.0) -> dict:
    """Stats once no group is live (a soak against a busy server would count others' groups)."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = probe.esamp_stats()
        if not total_of(s).get("groups_live") or time.monotonic() > deadline:
            return s
        time.sleep(0.2)


def capabilities(before: dict, sessions: dict) -> Capabilities:
    config = config_of(before)
    session_max = config.get("session_max")
    session_max = 4 if session_max is None else int(session_max)
    occupancy = int(total_of(before).get("bank_occupancy") or 0)
    room = max(0, session_max - occupancy)
    return Capabilities(session_mode=sessions["mode"], rejects_unissued=sessions["rejects_unissued"],
                        session_pool=max(1, min(3, room)) if room else 1,
                        warm_start=bool(config.get("warm_start")),
                        default_beta=float(config.get("default_beta", 0.25) or 0.0))


# ---------------------------------------------------------------------------------------------------------- settle
class SessionTarget:
    """The occupancy the bank must come back to (see the module docstring)."""

    def __init__(self, before: dict, registered: set, session_max: int):
        self.before_total = total_of(before)
        self.base = int(self.before_total.get("bank_occupancy") or 0)
        self.registered = set(registered)
        self.session_max = session_max

    def __call__(self, total: Dict[str, float]) -> Tuple[int, bool, str]:
        live = live_sessions(total)
        if live is not None:
            return int(live[1]), True, f"server counter {live[0]}"
        room = max(0, self.session_max - self.base)
        target = self.base + min(len(self.registered), room)
        moved = [k for k in ("sessions_evicted", "session_overflows")
                 if (total.get(k) or 0) != (self.before_total.get(k) or 0)]
        if moved:
            return target, False, f"upper bound ({' and '.join(moved)} changed during the run)"
        return target, True, "occupancy before + this run's sessions with a slot"


def settle(probe: ServerProbe, target: Callable, t_last: float, timeout_s: float,
           interval_s: float = 0.05) -> dict:
    polls = 0
    while True:
        total = probe.esamp_total()
        now = time.monotonic()
        polls += 1
        occ, live = int(total.get("bank_occupancy") or 0), int(total.get("groups_live") or 0)
        want, exact, how = target(total)
        done = live == 0 and (occ == want if exact else occ <= want)
        if done or now - t_last > timeout_s:
            return {"settled": done, "settle_s": round(now - t_last, 3), "polls": polls, "occupancy_after": occ,
                    "groups_live_after": live, "expected_occupancy": want, "exact": exact, "target": how,
                    "total": total}
        time.sleep(interval_s)


def health(probe: ServerProbe, proc=None) -> dict:
    answer = probe.health(timeout_s=30)
    alive = proc.poll() is None if proc is not None else None
    return {"health_status": answer.status, "process_alive": alive, "error": answer.error,
            "alive": answer.ok and alive is not False}


# ---------------------------------------------------------------------------------------------------------- report
def _quantile(xs: List[float], q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 3)


def summarize_results(results: List[Result], examples_per_kind: int = 3) -> dict:
    kinds: Dict[str, dict] = {}
    bad_inputs: Dict[str, Dict[str, int]] = {}
    examples: List[dict] = []
    conn_examples: List[dict] = []
    shown: Dict[str, int] = {}
    lat: Dict[str, List[float]] = {}
    for r in results:
        k = kinds.setdefault(r.kind, {"sent": 0, "statuses": {}, "outcomes": {}})
        k["sent"] += 1
        st = "none" if r.status is None else str(r.status)
        k["statuses"][st] = k["statuses"].get(st, 0) + 1
        k["outcomes"][r.outcome] = k["outcomes"].get(r.outcome, 0) + 1
        if r.outcome in ("ok", "disconnected"):
            lat.setdefault(r.kind, []).append(r.latency_s)
        if r.variant:
            v = bad_inputs.setdefault(r.variant, {})
            v[st] = v.get(st, 0) + 1
        ex = {"kind": r.kind, "route": r.route, "variant": r.variant, "status": r.status, "outcome": r.outcome,
              "problem": r.problem, "started_at": r.started_at, "latency_s": round(r.latency_s, 3),
              "request": r.request, "response": r.response}
        if r.outcome == "conn_error" and len(conn_examples) < 5:
            conn_examples.append(ex)
        if r.outcome in ("unexpected", "session_lost") and shown.get(r.kind, 0) < examples_per_kind:
            shown[r.kind] = shown.get(r.kind, 0) + 1
            examples.append(ex)
    for name, k in kinds.items():
        xs = lat.get(name, [])
        k["latency_p50_s"], k["latency_p95_s"] = _quantile(xs, 0.5), _quantile(xs, 0.95)
        k["latency_mean_s"] = round(statistics.fmean(xs), 3) if xs else None
    count = lambda o: sum(r.outcome == o for r in results)   # noqa: E731
    metas = [m for r in results for m in r.metas if isinstance(m, dict)]
    return {"kinds": dict(sorted(kinds.items())), "bad_inputs": dict(sorted(bad_inputs.items())),
            "unexpected": count("unexpected"), "http_5xx": sum(r.status is not None and r.status >= 500
                                                               for r in results),
            "connection_errors": count("conn_error"), "disconnected_as_planned": count("disconnected"),
            "session_lost": count("session_lost"), "examples": examples, "connection_error_examples": conn_examples,
            "outputs_with_esamp": len(metas), "outputs_with_fallback": sum(bool(m.get("fallback")) for m in metas),
            "retractions_seen": sum(r.retractions for r in results)}


def counter_deltas(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    out = {}
    for name, v in after.items():
        if name in GAUGES or name.startswith("time_") or not isinstance(v, (int, float)):
            continue
        d = v - (before.get(name) or 0)
        out[name] = round(d, 6) if isinstance(d, float) else d
    return dict(sorted(out.items()))


def shown_counters(delta: Dict[str, float]) -> Dict[str, float]:
    names = [n for n in SHOWN if n in delta] + sorted(n for n in delta if n not in SHOWN and
                                                      any(w in n for w in SHOWN_WORDS))
    return {n: delta[n] for n in names}


def fault_points(spec: Optional[str]) -> Dict[str, float]:
    out = {}
    for part in (spec or "").split(","):
        point, _, p = part.strip().partition(":")
        try:
            out[point] = float(p)
        except ValueError:
            continue
    return out


def verdict(summary: dict, delta: Dict[str, float], settle_info: dict, alive: dict, faults: Optional[str],
            esamp_sent: int, session_growth: Optional[Tuple[str, float, int]] = None, retract: bool = False
            ) -> Tuple[List[str], List[str]]:
    """(failures, warnings): any failure makes the exit code non-zero. ``session_growth``: (the server's live-session
    counter, its growth over the run, the sessions this run started)."""
    fail, warn = [], []
    if not sum(k["sent"] for k in summary["kinds"].values()):
        fail.append("no request was sent")
    if summary["unexpected"]:
        fail.append(f"{summary['unexpected']} unexpected answer(s)")
    if summary["http_5xx"]:
        fail.append(f"{summary['http_5xx']} HTTP 5xx")
    if summary["connection_errors"]:
        fail.append(f"{summary['connection_errors']} connection error(s)")
    if not alive["alive"]:
        fail.append(f"server not alive after the load (health {alive['health_status']}, "
                    f"process alive {alive['process_alive']})")
    if not settle_info.get("settled"):
        fail.append(f"bank not settled {settle_info.get('settle_s')} s after the last response: occupancy "
                    f"{settle_info.get('occupancy_after')} (expected {'<= ' if not settle_info.get('exact') else ''}"
                    f"{settle_info.get('expected_occupancy')}), groups_live {settle_info.get('groups_live_after')}")
    if delta.get("groups_expired", 0) > 0:
        fail.append(f"{delta['groups_expired']} group(s) expired (a member never left: the linger backstop "
                    f"freed the slot)")
    if session_growth is not None and session_growth[1] > session_growth[2]:
        fail.append(f"{session_growth[0]} grew by {session_growth[1]:g} but this run started only "
                    f"{session_growth[2]} session(s)")
    if summary["session_lost"] and not delta.get("sessions_evicted", 0):
        fail.append(f"{summary['session_lost']} session follow-up(s) rejected although no session was evicted")
    points = fault_points(faults)
    raising = any(points.get(p, 0) > 0 for p in RAISING_FAULTS)
    if faults:
        if raising and not delta.get("step_errors", 0):
            fail.append(f"faults {faults!r} injected but step_errors did not move")
        if "faults_injected" in delta and not delta["faults_injected"]:
            warn.append("faults configured but faults_injected did not move")
    else:
        if delta.get("step_errors", 0):
            fail.append(f"{delta['step_errors']} ESamp step error(s) without injected faults")
        for name in ("nonfinite_losses", "nan_resets", "error_resets"):
            if delta.get(name, 0):
                warn.append(f"{name} moved by {delta[name]} without injected faults")
    if esamp_sent and not delta.get("updates", 0):
        fail.append("ESamp requests were served but the distillers never updated (updates did not move)")
    if retract and not summary["retractions_seen"]:
        warn.append("--retract, but no response reported meta_info.num_retractions > 0")
    if delta.get("tap_misses", 0):
        warn.append(f"{delta['tap_misses']} tap miss(es)")
    if settle_info.get("settled") and settle_info.get("settle_s", 0) > 1.0:
        warn.append(f"settled after {settle_info['settle_s']} s (target: 1 s)")
    if not settle_info.get("exact", True):
        warn.append(f"occupancy checked against an {settle_info.get('target')}")
    return fail, warn


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def format_table(rep: dict) -> str:
    lines = []
    w = lambda *cols: lines.append("  ".join(cols))   # noqa: E731
    s = rep["settings"]
    lines.append(f"bench_soak: {rep['load']['sent']} requests ({rep['load']['units_run']} units) at concurrency "
                 f"{s['concurrency']}, max_tokens {s['max_tokens']}, seed {s['seed']}, "
                 f"{rep['load']['wall_s']:.1f} s ({rep['load']['requests_per_s']:.2f} req/s)"
                 + (", stopped by --time-limit" if rep["load"]["stopped_by_time_limit"] else ""))
    lines.append(f"server {rep['server']['base_url']} ({rep['server'].get('model_path')}), faults "
                 f"{s.get('faults') or 'none'}, retract {s.get('retract')}, sessions: {rep['session_protocol']['mode']}"
                 f" (issues ids {rep['session_protocol']['issues_ids']}, rejects unissued "
                 f"{rep['session_protocol']['rejects_unissued']})")
    lines.append("")
    w(f"{'kind':<20}", f"{'sent':>5}", f"{'statuses':<22}", f"{'ok':>4}", f"{'unexp':>5}", f"{'conn':>4}",
      f"{'p50 s':>7}", f"{'p95 s':>7}")
    for name, k in rep["kinds"].items():
        sts = ",".join(f"{c}:{n}" for c, n in sorted(k["statuses"].items()))
        o = k["outcomes"]
        okn = o.get("ok", 0) + o.get("disconnected", 0) + o.get("session_lost", 0)
        w(f"{name:<20}", f"{k['sent']:>5}", f"{sts:<22}", f"{okn:>4}", f"{o.get('unexpected', 0):>5}",
          f"{o.get('conn_error', 0):>4}", f"{k['latency_p50_s'] if k['latency_p50_s'] is not None else '-':>7}",
          f"{k['latency_p95_s'] if k['latency_p95_s'] is not None else '-':>7}")
    if rep["bad_inputs"]:
        lines.append("bad inputs: " + "; ".join(f"{v} -> {','.join(f'{c}:{n}' for c, n in st.items())}"
                                                for v, st in rep["bad_inputs"].items()))
    lines.append("")
    occ = rep["occupancy"]
    lines.append(f"unexpected {rep['unexpected']}, 5xx {rep['http_5xx']}, connection errors "
                 f"{rep['connection_errors']}, disconnects as planned {rep['disconnected_as_planned']}, "
                 f"session follow-ups lost {rep['session_lost']}, retractions reported {rep['retractions_seen']}")
    lines.append(f"server alive {rep['server_health']['alive']} (GET /health {rep['server_health']['health_status']})")
    lines.append(f"occupancy: before {occ['before']}, peak {occ['peak_during_load']}, after {occ['occupancy_after']} "
                 f"(expected {'' if occ['exact'] else '<= '}{occ['expected_occupancy']}: {occ['target']}), "
                 f"groups_live after {occ['groups_live_after']} (peak {occ['groups_live_peak']}), settled "
                 f"{occ['settled']} in {occ['settle_s']} s")
    lines.append("counters over the run: " + ", ".join(f"{k} {v:g}" for k, v in rep["counters"]["shown"].items()))
    for e in rep["examples"]:
        lines.append(f"  example [{e['kind']}{'/' + e['variant'] if e['variant'] else ''}] {e['outcome']}: "
                     f"{e['problem']}; request {e['request']}; response {e['response']}")
    for e in rep["connection_error_examples"]:
        lines.append(f"  connection error [{e['kind']}] sent {e['started_at']} UTC, after {e['latency_s']} s: "
                     f"{e['problem']}")
    for x in rep["warnings"]:
        lines.append(f"warning: {x}")
    lines.append("PASS" if rep["ok"] else "FAIL: " + "; ".join(rep["failures"]))
    return "\n".join(lines)


def build_report(*, settings: dict, server: dict, session_protocol: dict, load: dict, results: List[Result],
                 runner_facts: dict, before: dict, settle_info: dict, after_total: Dict[str, float],
                 alive: dict, faults: Optional[str], command: str) -> dict:
    summary = summarize_results(results)
    delta = counter_deltas(total_of(before), after_total)
    # requests whose group got a distiller slot: the distillers must have updated
    esamp_sent = sum(1 for r in results if any(isinstance(m, dict) and m.get("slot") is not None for m in r.metas))
    live_before, live_after = live_sessions(total_of(before)), live_sessions(after_total)
    growth = None
    if live_before is not None and live_after is not None:
        growth = (live_after[0], live_after[1] - live_before[1], runner_facts["sessions"]["starts"])
    fail, warn = verdict(summary, delta, settle_info, alive, faults, esamp_sent, growth,
                         retract=bool(settings.get("retract")))
    wall = max(load["wall_s"], 1e-9)
    occupancy = {k: settle_info.get(k) for k in ("occupancy_after", "expected_occupancy", "exact", "target",
                                                 "settled", "settle_s", "groups_live_after", "polls")}
    occupancy.update({"before": int(total_of(before).get("bank_occupancy") or 0),
                      "peak_during_load": runner_facts["peaks"]["bank_occupancy"],
                      "groups_live_peak": runner_facts["peaks"]["groups_live"],
                      "bank_slots": int(total_of(before).get("bank_slots") or 0), "settle_target_s": 1.0,
                      "within_target": bool(settle_info.get("settled") and settle_info.get("settle_s", 99) <= 1.0)})
    load = {k: v for k, v in load.items() if k != "last_response"}
    load["requests_per_s"] = round(load["sent"] / wall, 3)
    load["wall_s"] = round(load["wall_s"], 3)
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
            "settings": settings, "server": server, "session_protocol": session_protocol, "load": load,
            **{k: summary[k] for k in ("kinds", "bad_inputs", "unexpected", "http_5xx", "connection_errors",
                                       "disconnected_as_planned", "session_lost", "examples",
                                       "connection_error_examples", "outputs_with_esamp", "outputs_with_fallback",
                                       "retractions_seen")},
            "sessions": runner_facts["sessions"], "server_health": alive, "occupancy": occupancy,
            "counters": {"shown": shown_counters(delta), "delta": delta, "total_after": after_total},
            "failures": fail, "warnings": warn, "ok": not fail}
