"""Runs the plan: ``concurrency`` async workers over httpx (native ``/generate``, streaming and mid-stream
disconnects) and the ``openai`` client (``/v1/...`` with ``extra_body={"esamp": ...}``; raw httpx if the package is
missing). Every request becomes one ``Result`` classified against what its ``Call`` expects:
  ``ok``            the expected status (a 400 naming the expected field; a 200 with the right number of outputs,
                    each with ``meta_info.esamp`` where ESamp is on)
  ``disconnected``  a stream the client hung up on as planned
  ``session_lost``  a follow-up whose session id the server no longer knows (400 naming ``esamp.session``);
                    tolerated only when the server evicted sessions during the run (``report``)
  ``unexpected``    anything else that got an HTTP answer
  ``conn_error``    no HTTP answer (refused, reset, timed out)
Sessions: one pool entry per concurrent session; the first use of an entry starts a session (``"new"`` when the
server issues ids, a client-made key otherwise) and later chains send its id back.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

import httpx

from .mix import Call, Capabilities, Unit

EXCERPT = 300
KEEPALIVE_EXPIRY_S = 1.0


@dataclass
class Result:
    kind: str
    route: str
    variant: Optional[str]
    status: Optional[int]
    outcome: str
    latency_s: float
    t_end: float
    problem: Optional[str] = None
    request: Optional[str] = None        # kept for examples only
    response: Optional[str] = None
    metas: List[dict] = field(default_factory=list)   # meta_info.esamp of the outputs (native routes)
    param: Optional[str] = None          # the field a 4xx answer names
    started_at: Optional[str] = None     # wall clock (UTC) when it was sent: find it in the server log
    retractions: int = 0                 # meta_info.num_retractions summed over the outputs (native routes)


def _excerpt(x: Any, n: int = EXCERPT) -> str:
    s = x if isinstance(x, str) else json.dumps(x, default=str)
    return s if len(s) <= n else s[:n] + "..."


def _error_field(data: Any):
    """(param, message) of an error body: ``{"error": {"param", "message"}}`` or a flat variant."""
    err = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(err, dict):
        return None, str(err)
    return err.get("param"), str(err.get("message", ""))


def _metas(outs: List[dict]) -> List[dict]:
    return [o.get("meta_info", {}).get("esamp") for o in outs if isinstance(o, dict)]


def _retractions(outs: List[dict]) -> int:
    n = 0
    for o in outs:
        v = (o.get("meta_info") or {}).get("num_retractions") if isinstance(o, dict) else None
        n += v if isinstance(v, int) and not isinstance(v, bool) else 0
    return n


def check(call: Call, status: int, data: Any) -> Optional[str]:
    """None when the answer is what the call expects, else what is wrong."""
    if status != call.expect:
        return f"HTTP {status}, expected {call.expect}"
    if status == 400:
        param, message = _error_field(data)
        if call.expect_param and (param != call.expect_param or call.expect_param not in message):
            return f"400 names {param!r} ({message[:120]!r}), expected {call.expect_param!r}"
        return None
    if call.route == "/generate":
        outs = data if isinstance(data, list) else [data]
        if len(outs) != call.outputs:
            return f"{len(outs)} outputs, expected {call.outputs}"
        for o in outs:
            if not isinstance(o, dict) or not isinstance(o.get("text"), str):
                return "an output without text"
            if call.esamp_on and not isinstance((o.get("meta_info") or {}).get("esamp"), dict):
                return "an ESamp output without meta_info.esamp"
        return None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or len(choices) != call.outputs:
        return f"{len(choices) if isinstance(choices, list) else 'no'} choices, expected {call.outputs}"
    return None


@dataclass
class SessionEntry:
    key: Optional[str] = None
    generation: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Runner:
    def __init__(self, base: str, caps: Capabilities, concurrency: int, request_timeout_s: float, run_id: str,
                 time_limit_s: Optional[float] = None, progress: bool = True, stats_every_s: float = 1.0):
        self.base = base.rstrip("/")
        self.caps = caps
        self.concurrency = concurrency
        self.request_timeout_s = request_timeout_s
        self.run_id = run_id
        self.time_limit_s = time_limit_s
        self.progress = progress
        self.stats_every_s = stats_every_s
        self.results: List[Result] = []
        self.sessions: List[SessionEntry] = []
        self.registered: Set[str] = set()     # session keys that got a slot at least once
        self.session_starts = 0
        self.session_id_mismatches = 0
        self.unissued = 0
        self.stopped_by_time_limit = False
        self.units_run = 0
        self.peaks = {"bank_occupancy": 0, "groups_live": 0, "polls": 0, "poll_errors": 0}
        self._bar = None

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _record(self, res: Result):
        self.results.append(res)
        if self._bar is not None:
            self._bar.update(1)
            bad = sum(r.outcome in ("unexpected", "conn_error") for r in self.results)
            if bad:
                self._bar.set_postfix(bad=bad, refresh=False)

    def _result(self, call: Call, t0: float, status, outcome, problem=None, data=None, metas=None,
                body=None) -> Result:
        t1 = time.monotonic()
        keep = outcome not in ("ok", "disconnected")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - (t1 - t0))) if keep else None
        param = _error_field(data)[0] if status is not None and 400 <= status < 500 else None
        return Result(call.kind, call.route, call.variant, status, outcome, t1 - t0, t1, problem,
                      request=_excerpt(body if body is not None else call.body, 600) if keep else None,
                      response=_excerpt(data) if keep and data is not None else None, metas=metas or [],
                      param=param, started_at=started)

    async def _native(self, call: Call, body: dict) -> Result:
        t0 = time.monotonic()
        url = self.base + call.route
        try:
            if call.stream:
                return await self._stream(call, body, t0)
            r = await self.http.post(url, json=body)
        except httpx.TransportError as e:       # connect / read errors and timeouts: no HTTP answer
            return self._result(call, t0, None, "conn_error", f"{type(e).__name__}: {e}", body=body)
        try:
            data = r.json()
        except ValueError:
            data = r.text
        problem = check(call, r.status_code, data)
        outs = (data if isinstance(data, list) else [data]) if r.status_code == 200 else []
        res = self._result(call, t0, r.status_code, "ok" if problem is None else "unexpected", problem, data,
                           _metas(outs), body)
        res.retractions = _retractions(outs)
        return res

    async def _stream(self, call: Call, body: dict, t0: float) -> Result:
        async with self.http.stream("POST", self.base + call.route, json=body) as r:
            status = r.status_code
            if status != 200:
                raw = await r.aread()
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = raw.decode(errors="replace")
                problem = check(call, status, data)
                return self._result(call, t0, status, "ok" if problem is None else "unexpected", problem, data,
                                    body=body)
            if call.disconnect_after == 0:      # hang up before the first chunk (the request may still be queued)
                return self._result(call, t0, status, "disconnected")
            chunks, done, metas, indices, retracted = 0, False, {}, set(), {}
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    obj = json.loads(payload)
                except ValueError:
                    return self._result(call, t0, status, "unexpected", "a stream chunk that is not JSON", payload,
                                        body=body)
                if isinstance(obj, dict) and "error" in obj:
                    return self._result(call, t0, status, "unexpected", "an error in the stream", obj, body=body)
                chunks += 1
                idx = obj.get("index", 0) if isinstance(obj, dict) else 0
                indices.add(idx)
                meta_info = (obj.get("meta_info") or {}) if isinstance(obj, dict) else {}
                if meta_info.get("esamp") is not None:
                    metas[idx] = meta_info["esamp"]
                retracted[idx] = _retractions([obj]) if isinstance(obj, dict) else 0
                if call.disconnect_after is not None and chunks >= call.disconnect_after:
                    return self._result(call, t0, status, "disconnected", metas=list(metas.values()))
            if not done:
                return self._result(call, t0, status, "unexpected", f"the stream ended after {chunks} chunks "
                                                                    f"without [DONE]", body=body)
            n = int(body["sampling_params"].get("n", 1))
            if len(indices) != n:
                return self._result(call, t0, status, "unexpected", f"stream chunks for {len(indices)} of {n} "
                                                                    f"outputs", body=body)
            if call.esamp_on and len(metas) != n:
                return self._result(call, t0, status, "unexpected", f"meta_info.esamp in {len(metas)} of {n} "
                                                                    f"streamed outputs", body=body)
            res = self._result(call, t0, status, "ok", metas=list(metas.values()))
            res.retractions = sum(retracted.values())
            return res

    async def _openai_call(self, call: Call) -> Result:
        t0 = time.monotonic()
        if self.openai is None:                  # the package is missing: the same JSON over httpx
            try:
                r = await self.http.post(self.base + call.route, json=call.body)
            except httpx.TransportError as e:
                return self._result(call, t0, None, "conn_error", f"{type(e).__name__}: {e}")
            try:
                data = r.json()
            except ValueError:
                data = r.text
            problem = check(call, r.status_code, data)
            return self._result(call, t0, r.status_code, "ok" if problem is None else "unexpected", problem, data)
        import openai

        kwargs = dict(call.body)
        extra = {"esamp": kwargs.pop("esamp")} if "esamp" in kwargs else None
        try:
            if call.route.endswith("chat/completions"):
                resp = await self.openai.chat.completions.create(**kwargs, extra_body=extra)
            else:
                resp = await self.openai.completions.create(**kwargs, extra_body=extra)
        except openai.APIStatusError as e:
            try:
                data = e.response.json()
            except ValueError:
                data = e.response.text
            problem = check(call, e.status_code, data)
            return self._result(call, t0, e.status_code, "ok" if problem is None else "unexpected", problem, data)
        except openai.APIConnectionError as e:   # includes timeouts
            return self._result(call, t0, None, "conn_error", f"{type(e).__name__}: {e}")
        data = resp.model_dump()
        problem = check(call, 200, data)
        return self._result(call, t0, 200, "ok" if problem is None else "unexpected", problem, data)

    async def _call(self, call: Call, body: Optional[dict] = None) -> Result:
        if call.route == "/generate":
            res = await self._native(call, body if body is not None else call.body)
        else:
            res = await self._openai_call(call)
        self._record(res)
        return res

    # -- sessions ----------------------------------------------------------------------------------------------
    def _with_session(self, call: Call, session: str) -> dict:
        body = copy.deepcopy(call.body)
        body["sampling_params"]["esamp"] = {**body["sampling_params"]["esamp"], "session": session}
        return body

    def _note_slots(self, key: str, res: Result):
        if any(isinstance(m, dict) and m.get("slot") is not None for m in res.metas):
            self.registered.add(key)

    async def _session_start(self, call: Call, entry: SessionEntry, index: int) -> Result:
        self.session_starts += 1
        if self.caps.session_mode == "issued":
            res = await self._call(call, self._with_session(call, "new"))
            ids = {m.get("session") for m in res.metas if isinstance(m, dict)}
            ids.discard(None)
            if res.outcome == "ok":
                if len(ids) == 1 and next(iter(ids)) != "new":
                    entry.key = next(iter(ids))
                    self._note_slots(entry.key, res)
                else:   # the server said it issues ids but did not here
                    res.outcome, res.problem = "unexpected", f"session 'new' answered with ids {sorted(ids)}"
                    res.request = _excerpt(call.body, 600)
            return res
        entry.generation += 1
        key = f"soak-{self.run_id}-s{index}.{entry.generation}"
        res = await self._call(call, self._with_session(call, key))
        if res.outcome == "ok":
            entry.key = key
            self._note_slots(key, res)
        return res

    async def _session_follow(self, call: Call, entry: SessionEntry, index: int) -> Result:
        key = entry.key
        res = await self._call(call, self._with_session(call, key))
        if res.status == 400 and res.param == "esamp.session":
            res.outcome = "session_lost"        # judged in the report against the server's evictions
            if entry.key == key:
                entry.key = None
        elif res.outcome == "ok":
            self._note_slots(key, res)
            ids = {m.get("session") for m in res.metas if isinstance(m, dict)} - {None}
            if self.caps.session_mode == "issued" and ids and ids != {key}:
                self.session_id_mismatches += 1
        return res

    async def _chain(self, unit: Unit):
        entry = self.sessions[unit.session_index % len(self.sessions)]
        for call in unit.calls:
            if entry.key is None:
                async with entry.lock:             # one start per entry; the others wait for its id
                    if entry.key is None:
                        await self._session_start(call, entry, unit.session_index)
                        continue
            await self._session_follow(call, entry, unit.session_index)

    # -- the load ----------------------------------------------------------------------------------------------
    async def _unit(self, unit: Unit):
        if unit.mode == "chain":
            await self._chain(unit)
        elif unit.mode == "parallel":
            await asyncio.gather(*(self._call(c) for c in unit.calls))
        else:
            c = unit.calls[0]
            if c.session_role == "unissued":
                self.unissued += 1
                await self._call(c, self._with_session(c, f"soak-unissued-{self.run_id}-{self.unissued}"))
            else:
                await self._call(c)
        self.units_run += 1

    async def _poll_stats(self, stop: asyncio.Event):
        while not stop.is_set():
            try:
                r = await self.http.get(self.base + "/esamp/stats", timeout=30)
                total = r.json().get("total") or {}
                self.peaks["polls"] += 1
                for k in ("bank_occupancy", "groups_live"):
                    self.peaks[k] = max(self.peaks[k], total.get(k) or 0)
            except Exception:   # noqa: BLE001 - a missed poll is only a missed peak
                self.peaks["poll_errors"] += 1
            try:
                await asyncio.wait_for(stop.wait(), self.stats_every_s)
            except asyncio.TimeoutError:
                pass

    async def run(self, units: List[Unit]) -> Dict[str, float]:
        self.sessions = [SessionEntry() for _ in range(max(1, self.caps.session_pool))]
        # idle connections are dropped well before the server's keep-alive timeout (uvicorn under SGLang: 5 s,
        # httpx's default expiry is 5 s too): reusing one the server is closing is a client-side ReadError
        limits = httpx.Limits(max_connections=self.concurrency * 4 + 16, max_keepalive_connections=self.concurrency,
                              keepalive_expiry=KEEPALIVE_EXPIRY_S)
        timeout = httpx.Timeout(self.request_timeout_s, connect=30.0)
        total = sum(len(u.calls) for u in units)
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="soak", unit="req", dynamic_ncols=True)
        pending = iter(units)
        t0 = 0.0

        async def worker():
            while True:
                if self.time_limit_s is not None and time.monotonic() - t0 > self.time_limit_s:
                    self.stopped_by_time_limit = True
                    return
                try:
                    unit = next(pending)
                except StopIteration:
                    return
                await self._unit(unit)

        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            self.http = http
            try:
                import openai

                self.openai = openai.AsyncOpenAI(base_url=self.base + "/v1", api_key="soak", max_retries=0,
                                                 timeout=self.request_timeout_s, http_client=http)
            except ImportError:
                self.openai = None
            stop = asyncio.Event()
            poller = asyncio.create_task(self._poll_stats(stop))
            t0 = time.monotonic()             # the clock of --time-limit starts with the first request
            try:
                await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            finally:
                stop.set()
                await poller
                if self._bar is not None:
                    self._bar.close()
        wall = time.monotonic() - t0
        return {"wall_s": wall, "planned_requests": total, "sent": len(self.results), "units_run": self.units_run,
                "units_planned": len(units), "stopped_by_time_limit": self.stopped_by_time_limit,
                "last_response": max((r.t_end for r in self.results), default=time.monotonic()),
                "openai_client": self.openai is not None}
