"""Sampling methods: stable short names <-> the request's sampling parameters (and its ``esamp`` value).

Grammar of a name (every name that parses is a method; the lists below are presets):
  ``t{T}[{filters}]``               plain sampling at temperature T (no filter unless suffixed)
  ``topp{p}``                       T=1, top-p p
  ``minp{p}``                       T=1, min-p p
  ``anchor``                        the authors' starter filters without ESamp: T 0.8, top-p 0.95, min-p 0.1
  ``sharpen_b{beta}[{filters}]``    the sharpening control: (1+beta)*l/T on the same candidates, no distiller term
                                    (``esamp = {"beta": beta, "sharpen_only": true}``)
  ``esamp_b{beta}_{random|warm}[_nosharpen][{filters}]``
                                    ESamp, distiller initialised randomly or from the server's warm start
                                    (``esamp = {"beta": beta, "init": "random" | "warm"}``); ``_nosharpen``: without
                                    the rule's (1+beta) sharpening (``"sharpen": false``: l/T - beta/(1+beta)*l_d)
  ``{filters}`` = ``_anchor`` (T 0.8, top-p 0.95, min-p 0.1: ESamp behind the authors' filters) or any of
  ``_t{T}``, ``_topp{p}``, ``_minp{p}`` in that order (unset: T 1, no filter).
Presets: ``default`` (the doc subset), ``sweep`` (temperatures), ``baselines``, ``esamp``, ``authors``, ``all``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional

BETAS = (0.1, 0.25, 0.5, 1.0)
TEMPERATURES = (0.6, 0.8, 1.0, 1.2)
INITS = ("random", "warm")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    family: str                        # "plain" | "sharpen" | "esamp"
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    beta: Optional[float] = None
    init: Optional[str] = None         # ESamp only: "random" | "warm"
    sharpen: bool = True               # ESamp only: False = esamp.sharpen false (no (1+beta) sharpening)

    @property
    def uses_esamp_path(self) -> bool:
        """Requests of this method carry an ``esamp`` value (ESamp proper or the sharpening control)."""
        return self.family in ("sharpen", "esamp")

    @property
    def trains_distiller(self) -> bool:
        return self.family == "esamp"

    @property
    def is_temperature_sweep(self) -> bool:
        return self.family == "plain" and self.top_p == 1.0 and self.min_p == 0.0

    def esamp_value(self) -> Optional[dict]:
        if self.family == "esamp":
            return {"beta": self.beta, "init": self.init, **({} if self.sharpen else {"sharpen": False})}
        if self.family == "sharpen":
            return {"beta": self.beta, "sharpen_only": True}
        return None

    def sampling_params(self, max_new_tokens: int, n: int) -> dict:
        sp = {"temperature": self.temperature, "top_p": self.top_p, "top_k": -1, "min_p": self.min_p,
              "max_new_tokens": max_new_tokens, "n": n}
        value = self.esamp_value()
        if value is not None:
            sp["esamp"] = value
        return sp

    def sort_key(self) -> tuple:
        """Report order: the temperature sweep by T, other baselines, the sharpening control, ESamp."""
        fam = {"plain": 0, "sharpen": 1, "esamp": 2}[self.family]
        sweep = 0 if self.is_temperature_sweep else 1
        return (fam, sweep, self.temperature, self.top_p, self.min_p, self.beta or 0.0, self.init or "",
                not self.sharpen)

    def settings(self) -> dict:
        """Everything that defines the method's samples (part of the cache key). ``sharpen`` only when off, so the
        keys of the samples generated before the option existed stay what they were."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}
        if out["sharpen"]:
            del out["sharpen"]
        return out


def _num(text: str) -> float:
    return float(text)


def _fmt(x: float) -> str:
    return f"{x:g}" if "." in f"{x:g}" else f"{x:.1f}"


ANCHOR = {"temperature": 0.8, "top_p": 0.95, "min_p": 0.1}    # tLLM's starter filters (DESIGN.md reference)
_P = r"(0?\.\d+|1(\.0+)?)"
_FILTERS = rf"(?P<anchor>_anchor)?(_t(?P<t>\d+(\.\d+)?))?(_topp(?P<topp>{_P}))?(_minp(?P<minp>0?\.\d+))?$"


def _filters(m) -> dict:
    """The filter suffix of a name -> Method fields (``_anchor`` alone, or ``_t/_topp/_minp`` in that order)."""
    if m["anchor"]:
        if m["t"] or m["topp"] or m["minp"]:
            raise ValueError("'_anchor' already sets T, top-p and min-p; do not add _t/_topp/_minp to it")
        return dict(ANCHOR)
    out = {}
    if m["t"]:
        out["temperature"] = _num(m["t"])
    if m["topp"]:
        out["top_p"] = _num(m["topp"])
    if m["minp"]:
        out["min_p"] = _num(m["minp"])
    return out


_PATTERNS = [
    (re.compile(r"^anchor$"), lambda m: Method("", "plain", **ANCHOR)),
    (re.compile(rf"^t(?P<t0>\d+(\.\d+)?)(_topp(?P<topp>{_P}))?(_minp(?P<minp>0?\.\d+))?$"),
     lambda m: Method("", "plain", temperature=_num(m["t0"]), top_p=_num(m["topp"]) if m["topp"] else 1.0,
                      min_p=_num(m["minp"]) if m["minp"] else 0.0)),
    (re.compile(rf"^topp(?P<p>{_P})$"), lambda m: Method("", "plain", top_p=_num(m["p"]))),
    (re.compile(r"^minp(?P<p>0?\.\d+)$"), lambda m: Method("", "plain", min_p=_num(m["p"]))),
    (re.compile(r"^sharpen_b(?P<b>\d+(\.\d+)?)" + _FILTERS),
     lambda m: Method("", "sharpen", beta=_num(m["b"]), **_filters(m))),
    (re.compile(r"^esamp_b(?P<b>\d+(\.\d+)?)_(?P<init>random|warm)(?P<nosharpen>_nosharpen)?" + _FILTERS),
     lambda m: Method("", "esamp", beta=_num(m["b"]), init=m["init"], sharpen=not m["nosharpen"], **_filters(m))),
]


def parse_method(name: str) -> Method:
    for pattern, build in _PATTERNS:
        m = pattern.match(name)
        if m:
            method = dataclasses.replace(build(m), name=name)
            if not 0.0 < method.temperature <= 4.0:
                raise ValueError(f"method {name!r}: temperature must be in (0, 4]")
            if method.beta is not None and not 0.0 <= method.beta <= 4.0:
                raise ValueError(f"method {name!r}: beta must be in [0, 4]")
            if not 0.0 < method.top_p <= 1.0 or not 0.0 <= method.min_p < 1.0:
                raise ValueError(f"method {name!r}: top-p must be in (0, 1] and min-p in [0, 1)")
            return method
    raise ValueError(f"unknown method {name!r}; names look like t1.0, topp0.95, minp0.1, sharpen_b0.25, "
                     f"sharpen_b0.25_minp0.1, esamp_b0.25_random, esamp_b0.25_warm_minp0.1, anchor, esamp_b0.8_warm_anchor "
                     f"(or a preset: {', '.join(PRESETS)})")


def _esamp_names() -> List[str]:
    return [f"esamp_b{_fmt(b)}_{init}{suffix}" for b in BETAS for init in INITS for suffix in ("", "_minp0.1")]


PRESETS: Dict[str, List[str]] = {
    "default": ["t1.0", "t0.8", "minp0.1", "sharpen_b0.25", "esamp_b0.25_random", "esamp_b0.25_warm"],
    "sweep": [f"t{_fmt(t)}" for t in TEMPERATURES],
    "baselines": [f"t{_fmt(t)}" for t in TEMPERATURES] + ["topp0.95", "minp0.1", "sharpen_b0.25",
                                                          "sharpen_b0.25_minp0.1"],
    "esamp": _esamp_names(),
    # the authors' configuration (ESamp behind tLLM's starter filters) and ESamp behind min-p alone
    "authors": ["anchor", "esamp_b0.8_random_anchor", "esamp_b0.8_warm_anchor", "esamp_b0.25_random_minp0.1"],
    # our variant (docs/quality.md): the authors' arm without the (1+beta) sharpening
    "ours": ["esamp_b0.8_random_nosharpen_anchor"],
}
PRESETS["all"] = PRESETS["baselines"] + PRESETS["esamp"]


def resolve_methods(spec: str) -> List[Method]:
    """A comma-separated list of names and/or presets -> methods, in order, without duplicates."""
    names: List[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        for name in PRESETS.get(part, [part]):
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("no methods given")
    return [parse_method(n) for n in names]
