"""The soak's traffic: seeded units of requests, each request with the status (and, for a 400, the field) it expects.

A *unit* is what one worker runs: one request (``single``), the members of one explicit ``esamp.group`` sent at
once (``parallel``; all of them, so the group never waits for a member that was never sent), or the requests of
one session in order (``chain``: the first starts the session, the follow-ups send its id back). The plan holds
one unit of every kind (so even a short run covers them all) and weighted draws for the rest, shuffled.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = ("Write a haiku about the sea.", "Name three fruits.", "Tell me a short story about a robot.",
             "What is 17 times 3?", "Give me a name for a cat.", "Describe the color blue.",
             "List two uses of a brick.", "Say hello in French.", "Why is the sky blue?",
             "Write a limerick about a frog.")
RAW_PROMPTS = ("Once upon a time", "The capital of France is", "def fibonacci(n):", "My favourite season is")
# SmolLM2 often ends at its first token on this raw prompt: the siblings that never decode must still leave
FIRST_TOKEN_PROMPT = "Write a short poem about autumn."
LONG_QUESTION = "Tell me a long story about dragons."
FILTERS = ({}, {"top_p": 0.9}, {"top_k": 20}, {"min_p": 0.05}, {"top_p": 0.95, "top_k": 40},
           {"min_p": 0.1, "top_k": 50})
NS = (1, 2, 4, 8)
N_WEIGHTS = (4, 3, 2, 1)
BETAS = (0.25, 0.5, 1.0)

# (route, esamp value or body change, field the 400 must name)
BAD_INPUTS = {
    "esamp.beta=-1": ("/generate", {"esamp": {"beta": -1}}, "esamp.beta"),
    'esamp="x"': ("/generate", {"esamp": "x"}, "esamp"),
    'custom_params="x"': ("/generate", {"custom_params": "x"}, "custom_params"),
    "esamp unknown key": ("/generate", {"esamp": {"betta": 0.25}}, "esamp"),
    "esamp.group_size=0": ("/generate", {"esamp": {"group": "soak-bad", "group_size": 0}}, "esamp.group_size"),
    'esamp.init="hot"': ("/generate", {"esamp": {"init": "hot"}}, "esamp.init"),
    'esamp.session=""': ("/generate", {"esamp": {"session": ""}}, "esamp.session"),
    "openai chat esamp.beta=9": ("/v1/chat/completions", {"esamp": {"beta": 9}}, "esamp.beta"),
    'openai completions esamp="x"': ("/v1/completions", {"esamp": "x"}, "esamp"),
}

# kind -> weight of the random draws (one unit of each kind is always in the plan)
WEIGHTS: Dict[str, float] = {
    "plain": 8, "esamp": 14, "esamp_filters": 8, "greedy": 4, "sharpen_only": 4, "random_init": 3,
    "stream": 5, "stream_disconnect": 4, "group": 4, "session": 4, "session_unissued": 1,
    "first_token_end": 4, "bad_input": 6, "openai_chat": 5, "openai_completion": 4, "generate_batch": 4,
}
SESSION_KINDS = ("session", "session_unissued")


@dataclass
class Call:
    kind: str
    route: str                                  # /generate, /v1/chat/completions, /v1/completions
    body: dict
    expect: int = 200
    expect_param: Optional[str] = None          # the field a 400 must name
    variant: Optional[str] = None               # bad inputs: which one
    esamp_on: bool = False                      # every output must carry meta_info.esamp (native route)
    outputs: int = 1                            # outputs a native non-streaming answer must hold
    stream: bool = False
    disconnect_after: Optional[int] = None      # stream: hang up after this many data chunks (0: at once)
    session_role: Optional[str] = None          # start | follow | unissued: esamp.session is filled at send time


@dataclass
class Unit:
    kind: str
    mode: str                                   # single | parallel | chain
    calls: List[Call]
    session_index: Optional[int] = None         # chain: which entry of the session pool
    meta: dict = field(default_factory=dict)


@dataclass
class Capabilities:
    """What the probes found out about the server (``report.probe``)."""
    session_mode: str = "legacy"                # issued: "session": "new" -> server id | legacy: any key
    rejects_unissued: bool = False              # an id the server did not issue gets a 400
    session_pool: int = 3                       # session entries in use at once (<= the server's session_max)
    warm_start: bool = False
    default_beta: float = 0.25                  # what "esamp": true means on this server


class Planner:
    def __init__(self, rng: random.Random, max_tokens: int, caps: Capabilities, run_id: str):
        self.rng = rng
        self.max_tokens = max_tokens
        self.caps = caps
        self.run_id = run_id
        self.groups = 0

    # -- helpers -----------------------------------------------------------------------------------------------
    def _n(self) -> int:
        return self.rng.choices(NS, N_WEIGHTS)[0]

    def _chat(self) -> str:
        return CHAT.format(self.rng.choice(QUESTIONS))

    def _esamp(self) -> object:
        if self.rng.random() < 0.2 and self.caps.default_beta > 0:
            return True                # the server's default beta
        return {"beta": self.rng.choice(BETAS)}

    def _generate(self, kind: str, sp: dict, text=None, esamp=None, **kw) -> Call:
        sp = {"max_new_tokens": self.max_tokens, "temperature": 1.0, **sp}
        if esamp is not None:
            sp["esamp"] = esamp
        text = self._chat() if text is None else text
        prompts = len(text) if isinstance(text, list) else 1
        return Call(kind, "/generate", {"text": text, "sampling_params": sp}, esamp_on=esamp is not None,
                    outputs=prompts * int(sp.get("n", 1)), **kw)

    # -- kinds -------------------------------------------------------------------------------------------------
    def unit(self, kind: str) -> Unit:
        rng, mt = self.rng, self.max_tokens
        if kind == "plain":
            return Unit(kind, "single", [self._generate(kind, {"n": self._n(), **rng.choice(FILTERS)})])
        if kind == "esamp":
            return Unit(kind, "single", [self._generate(kind, {"n": self._n()}, esamp=self._esamp())])
        if kind == "esamp_filters":
            return Unit(kind, "single", [self._generate(kind, {"n": self._n(), **rng.choice(FILTERS[1:])},
                                                        esamp=self._esamp())])
        if kind == "greedy":
            esamp = self._esamp() if rng.random() < 0.7 else None
            return Unit(kind, "single", [self._generate(kind, {"temperature": 0.0}, esamp=esamp)])
        if kind == "sharpen_only":
            return Unit(kind, "single", [self._generate(kind, {"n": rng.choice((1, 2, 4))},
                                                        esamp={"beta": rng.choice(BETAS), "sharpen_only": True})])
        if kind == "random_init":
            return Unit(kind, "single", [self._generate(kind, {"n": rng.choice((2, 4))},
                                                        esamp={"beta": 0.25, "init": "random"})])
        if kind == "stream":
            c = self._generate(kind, {"n": rng.choice((1, 2))}, esamp=self._esamp(), stream=True)
            c.body["stream"] = True
            return Unit(kind, "single", [c])
        if kind == "stream_disconnect":
            c = self._generate(kind, {"n": rng.choice((1, 2)), "max_new_tokens": max(8 * mt, 128),
                                      "ignore_eos": True}, text=CHAT.format(LONG_QUESTION), esamp=self._esamp(),
                               stream=True, disconnect_after=rng.choice((0, 1, 2, 3, 5)))
            c.body["stream"] = True
            return Unit(kind, "single", [c])
        if kind == "group":
            self.groups += 1
            key = f"soak-{self.run_id}-g{self.groups}"
            ns = [rng.choice((1, 2)) for _ in range(rng.choice((2, 3)))]
            calls = [self._generate(kind, {"n": n, **rng.choice(FILTERS)},
                                    esamp={"beta": 0.25, "group": key, "group_size": sum(ns)}) for n in ns]
            return Unit(kind, "parallel", calls, meta={"group": key, "group_size": sum(ns)})
        if kind == "session":
            calls = []
            for i in range(rng.choice((2, 3))):
                c = self._generate(kind, {"n": rng.choice((1, 2))}, esamp={"beta": 0.25},
                                   session_role="start" if i == 0 else "follow")
                calls.append(c)
            return Unit(kind, "chain", calls, session_index=rng.randrange(max(1, self.caps.session_pool)))
        if kind == "session_unissued":
            c = self._generate(kind, {"n": 1, "max_new_tokens": 1}, esamp={"beta": 0.25},
                               session_role="unissued", expect=400, expect_param="esamp.session")
            return Unit(kind, "single", [c])
        if kind == "first_token_end":
            return Unit(kind, "single", [self._generate(kind, {"n": 4, "min_p": 0.05}, text=FIRST_TOKEN_PROMPT,
                                                        esamp={"beta": 0.25})])
        if kind == "bad_input":
            variant = rng.choice(sorted(BAD_INPUTS))
            route, change, param = BAD_INPUTS[variant]
            if route == "/generate":
                c = self._generate(kind, {"n": 1, **change}, expect=400, expect_param=param, variant=variant)
                c.esamp_on = False
            else:
                c = self._openai(kind, route, esamp=change["esamp"], n=1)
                c.expect, c.expect_param, c.variant, c.esamp_on = 400, param, variant, False
            return Unit(kind, "single", [c])
        if kind == "openai_chat":
            return Unit(kind, "single", [self._openai(kind, "/v1/chat/completions", esamp=self._esamp(),
                                                      n=rng.choice((1, 2)))])
        if kind == "openai_completion":
            return Unit(kind, "single", [self._openai(kind, "/v1/completions", esamp=self._esamp(),
                                                      n=rng.choice((1, 2, 4)))])
        if kind == "generate_batch":
            prompts = [self._chat() for _ in range(rng.choice((2, 3)))]
            return Unit(kind, "single", [self._generate(kind, {"n": rng.choice((1, 2))}, text=prompts,
                                                        esamp=self._esamp() if rng.random() < 0.8 else None)])
        raise ValueError(f"unknown kind {kind!r}")

    def _openai(self, kind: str, route: str, esamp, n: int) -> Call:
        body = {"model": "default", "max_tokens": self.max_tokens, "temperature": 1.0, "n": n}
        if route.endswith("chat/completions"):
            body["messages"] = [{"role": "user", "content": self.rng.choice(QUESTIONS)}]
        else:
            body["prompt"] = self.rng.choice(RAW_PROMPTS)
        if esamp is not None:
            body["esamp"] = esamp          # sent as the openai client's extra_body
        return Call(kind, route, body, outputs=n)

    def kinds(self) -> List[str]:
        out = list(WEIGHTS)
        if not self.caps.rejects_unissued:
            out.remove("session_unissued")   # a server without issued ids accepts any key
        return out

    def plan(self, requests: int) -> List[Unit]:
        """One unit of every kind, then weighted draws until ``requests`` requests, shuffled (the total may pass
        ``requests`` by the rest of one unit: a group or a session is never cut)."""
        kinds = self.kinds()
        units: List[Unit] = []
        total = 0
        for k in self.rng.sample(kinds, len(kinds)):
            if total >= requests:
                break
            units.append(self.unit(k))
            total += len(units[-1].calls)
        weights = [WEIGHTS[k] for k in kinds]
        while total < requests:
            units.append(self.unit(self.rng.choices(kinds, weights)[0]))
            total += len(units[-1].calls)
        self.rng.shuffle(units)
        return units
