"""How far a method lies above the plain-temperature frontier, at its own quality, with a paired bootstrap SE.

The temperature sweep (methods ``t{T}``, no filter) traces the baseline trade-off between quality and diversity.
For another method M at quality x_M, the frontier's diversity there is the sweep's piecewise-linear line through
its points sorted by x, read at x_M; the gap is ``y_M - line(x_M)`` (> 0: more diverse than plain sampling at the
same quality). Quality axes: ``nll`` (mean NLL per token = log perplexity, lower is better) for every task and
``pass@1`` for correctness tasks; diversity axes: Vendi, distinct-2 and, for correctness tasks, pass@n.

The straight line between sparse points lies below a concave curve through them, so it overstates how far a
method lies above the sweep between its points. ``fit="concave"`` reads the gap off a second frontier instead:
the least-squares quadratic through the sweep's points that is concave and monotone over their quality range
(``concave_fit``; through three points whose parabola is concave and monotone there, that parabola). The report
gives both; a claim that holds under one only is marked as such (docs/quality.md).

The SE resamples problems with the same indices for every method (as the paired differences do): each replicate
re-draws the whole line and the method's point, so the line's own noise is in the SE. A method whose quality lies
outside the sweep's range has no gap (the line is not extrapolated); ``inside`` is the share of replicates where
it lies inside, so a gap read off near the end of the sweep shows how often it fell outside.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import as_float_array


def axis_pairs(correctness: bool, n: int, pair_distinct: bool = False) -> List[Tuple[str, str]]:
    """(quality key, diversity key) pairs the report reads gaps on (distinct-2 per sample pair against the NLL too
    where it is measured)."""
    pairs = [("nll", "vendi"), ("nll", "distinct2")] + ([("nll", "distinct2_pair")] if pair_distinct else [])
    if correctness:
        pairs = [("pass@1", "vendi"), ("pass@1", "distinct2"), ("pass@1", f"pass@{n}")] + pairs
    return pairs


def line_at(xs: Sequence[float], ys: Sequence[float], x: float) -> Optional[float]:
    """The sweep's line (points sorted by x) at x; None outside [min x, max x] or with fewer than two points."""
    pts = sorted((a, b) for a, b in zip(xs, ys) if np.isfinite(a) and np.isfinite(b))
    if len(pts) < 2 or not np.isfinite(x) or not pts[0][0] <= x <= pts[-1][0]:
        return None
    px, py = zip(*pts)
    return float(np.interp(x, px, py))


def _sorted_points(xs, ys):
    return sorted((float(a), float(b)) for a, b in zip(xs, ys) if np.isfinite(a) and np.isfinite(b))


def _polyfit(x: np.ndarray, y: np.ndarray, deg: int) -> Tuple[float, ...]:
    """Least-squares polynomial coefficients, highest power first (np.polyfit without its conditioning warning,
    which resampled sweeps whose points nearly coincide in x would raise)."""
    coef, *_ = np.linalg.lstsq(np.vander(x, deg + 1), y, rcond=None)
    return tuple(float(c) for c in coef)


def concave_fit(xs: Sequence[float], ys: Sequence[float]) -> Optional[Tuple[float, float, float]]:
    """(c, b, a) of the least-squares y = c x^2 + b x + a with c <= 0 (concave) that is monotone on [min x, max x]
    (its vertex not strictly inside); None with fewer than two distinct x, the straight line with two. The
    constrained optimum is the plain quadratic fit when that is feasible, else lies on a face of the constraints:
    c = 0 (the least-squares straight line) or the vertex at an end of the range (y = a + c (x - x_end)^2, c <= 0);
    the best feasible one is taken."""
    pts = _sorted_points(xs, ys)
    if len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    lo, hi = x[0], x[-1]
    cands = [(0.0, *_polyfit(x, y, 1))]
    if len(set(x)) < 3:
        return tuple(float(v) for v in cands[0])       # two points: no curvature to fit, the straight line
    c, b, a = _polyfit(x, y, 2)
    if c <= 0 and (c == 0 or not lo < -b / (2 * c) < hi):
        cands.append((c, b, a))
    for end in (lo, hi):
        (a, c), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), (x - end) ** 2], axis=1), y, rcond=None)
        if c <= 0:
            cands.append((c, -2 * c * end, a + c * end * end))
    sse = [float(((np.polyval(k, x) - y) ** 2).sum()) for k in cands]
    return tuple(float(v) for v in cands[int(np.argmin(sse))])


def concave_at(xs: Sequence[float], ys: Sequence[float], x: float) -> Optional[float]:
    """The sweep's monotone concave fit at x; None outside [min x, max x] (never extrapolated)."""
    pts = _sorted_points(xs, ys)
    if len(pts) < 2 or not np.isfinite(x) or not pts[0][0] <= x <= pts[-1][0]:
        return None
    k = concave_fit(xs, ys)
    return None if k is None else float(np.polyval(k, x))


FITS = {"line": line_at, "concave": concave_at}


def _means(v: np.ndarray, idx: Optional[np.ndarray]) -> np.ndarray:
    """[1] mean over problems (idx None), else [replicates] means over the resampled problems; NaN = missing."""
    if idx is None:
        return np.array([np.nanmean(v)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a resample of only missing problems
        return np.nanmean(v[idx], axis=1)


def gap(method_cols: Dict[str, list], sweep_cols: Sequence[Dict[str, list]], xkey: str, ykey: str,
        idx: np.ndarray, fit: str = "line") -> Optional[dict]:
    """{"gap", "se", "x", "line", "inside", "problems"} for one method on one (quality, diversity) pair, against the
    sweep's straight line (``fit="line"``) or its concave fit (``"concave"``; "line" is then the fit's value);
    None if unavailable."""
    frontier_at = FITS[fit]
    if xkey not in method_cols or ykey not in method_cols or len(sweep_cols) < 2 or \
            any(xkey not in s or ykey not in s for s in sweep_cols):
        return None
    # [method x, method y, sweep 1 x, sweep 1 y, ...], each over the problems
    cols = [as_float_array(c[k]) for c in (method_cols, *sweep_cols) for k in (xkey, ykey)]
    # only the problems every involved method has: a partial run must not compare different problem sets
    common = np.all([np.isfinite(c) for c in cols], axis=0)
    if not common.any():
        return None
    for c in cols:
        c[~common] = np.nan

    def gaps(rows: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = np.stack([_means(c, rows) for c in cols])          # [2 + 2 * points, replicates]
        x, y, sx, sy = m[0], m[1], m[2::2], m[3::2]
        lines = np.array([np.nan if (v := frontier_at(sx[:, r], sy[:, r], x[r])) is None else v
                          for r in range(len(x))])
        return y - lines, lines, x

    point, line, x = gaps(None)
    inside = bool(np.isfinite(point[0]))
    out = {"gap": float(point[0]) if inside else None, "se": None, "x": float(x[0]),
           "line": float(line[0]) if inside else None, "inside": float(inside), "problems": int(common.sum())}
    if idx.size:
        reps, _, _ = gaps(idx)
        ok = reps[np.isfinite(reps)]
        out["inside"] = float(len(ok) / len(reps))
        if inside and len(ok) > 1:
            out["se"] = float(ok.std(ddof=1))
    return out


def frontier_gaps(per_method: Dict[str, Dict[str, list]], sweep: Sequence[str], pairs: Sequence[Tuple[str, str]],
                  idx: np.ndarray, fit: str = "line") -> Dict[str, Dict[str, Optional[dict]]]:
    """{method: {"<diversity> vs <quality>": gap(...)}} for every method outside the sweep."""
    sweep_cols = [per_method[s] for s in sweep if s in per_method]
    if len(sweep_cols) < 2:
        return {}
    return {name: {f"{y} vs {x}": gap(cols, sweep_cols, x, y, idx, fit) for x, y in pairs}
            for name, cols in per_method.items() if name not in sweep}
