"""Outputs: ``results.json`` (the run's metadata and every figure; schema v2: no samples), ``results.md`` (the
tables), and two plots. The samples themselves stay in ``samples/<task>/<method>.jsonl.gz`` (cache.py), from which
``--report-only`` rebuilds all of these.

  pass_at_k.png   pass@k for k = 1..n per method (one panel per correctness task), bootstrap SE bars
  frontier.png    one row per task: quality on x (pass@1, or perplexity for open prompts: lower is better),
                  diversity or pass@n on y; the plain temperature sweep is drawn as a line (labelled by T) with its
                  monotone concave fit dotted (frontier.py), the
                  other baselines as grey markers, the sharpening control as squares, and ESamp beside them
                  (circles = random init, triangles = warm start; hollow = with min-p 0.1)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional

from .frontier import concave_fit
from .metrics import report_ks

# v1 (to 2026-12-06) also inlined every sample under "samples"; v2 names the sample files instead
SCHEMA = "sglang-esamp/bench_quality/v2"


def sample_files(summary: dict) -> Dict[str, Dict[str, str]]:
    """{task: {method: the path of its samples, relative to OUTPUT}} for every method the summary has."""
    return {task: {m: f"samples/{task}/{m}.jsonl.gz" for m in t["methods"]} for task, t in summary.items()}


def build_json(summary: dict, meta: dict) -> dict:
    return {"schema": SCHEMA, **meta, "tasks": summary, "sample_files": sample_files(summary)}


def write_json(path: Path, doc: dict):
    path.write_text(json.dumps(doc, indent=1, sort_keys=False, default=float) + "\n")


# ---------------------------------------------------------------- Markdown

def _fmt(fig: Optional[dict], digits: int = 3, pct: bool = False) -> str:
    if not fig or fig.get("mean") is None:
        return "–"
    scale = 100.0 if pct else 1.0
    m = fig["mean"] * scale
    s = f"{m:.{digits}f}"
    if fig.get("se") is not None:
        s += f" ± {fig['se'] * scale:.{digits}f}"
    return s


def _diff_cell(d: Optional[dict]) -> Optional[str]:
    """A paired difference as "mean ± SE (won/lost)", None where there is none."""
    return f"{_fmt(d)} ({d['wins']}/{d['losses']})" if d and d.get("mean") is not None else None


FRONTIER_TITLES = {
    "gaps": "Above the temperature line ({sweep}) at the method's own quality: diversity − the line's value there",
    "gaps_concave": "Above the sweep's monotone concave fit ({sweep}; the least-squares concave quadratic, "
                    "frontier.py) at the method's own quality: diversity − the fit's value there",
}


def _frontier_lines(t: dict, which: str = "gaps") -> list:
    fr = t.get("frontier") or {}
    gaps, sweep = fr.get(which) or {}, fr.get("sweep") or []
    if not gaps:
        return []
    keys = list(next(iter(gaps.values())).keys())
    title = FRONTIER_TITLES[which].format(sweep=", ".join(f"`{s}`" for s in sweep))
    lines = ["", title + " (mean ± paired bootstrap SE; [x] = the method's quality, pass@1 "
             "or perplexity; – = outside the sweep's range, not extrapolated; (in q%) = share of resamples that "
             "fell inside it when under 100 %):", "",
             "| method | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, per in gaps.items():
        cells = []
        for k in keys:
            g = per.get(k)
            if not g or g.get("gap") is None:
                cells.append("–")
                continue
            x = math.exp(g["x"]) if k.endswith("vs nll") else g["x"]
            cell = _fmt({"mean": g["gap"], "se": g["se"]}) + f" [{x:.3g}]"
            if g.get("inside") is not None and g["inside"] < 0.995:
                cell += f" (in {100 * g['inside']:.0f}%)"
            cells.append(cell)
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def _strict_lines(methods: dict, baseline: Optional[str], n: int) -> list:
    """math-verify's and the strict scorer's pass@1 and pass@n side by side, with the strict Δ against the baseline."""
    rows = [(name, m) for name, m in methods.items() if "strict_pass@1" in m["figures"]]
    if not rows:
        return []
    lines = ["", "Strict scoring (strict_math.py: the last boxed or \"answer is\" number must equal the gold) beside "
             f"math-verify; Δ against `{baseline}` ± paired SE (problems won/lost); differ = share of samples the "
             "two scorers judge differently:", "",
             f"| method | pass@1 math-verify | pass@1 strict | pass@{n} math-verify | pass@{n} strict | "
             f"Δ pass@1 strict | Δ pass@{n} strict | differ |", "|" + "---|" * 8]
    for name, m in rows:
        f, d = m["figures"], m.get("vs_baseline") or {}
        lines.append(f"| `{name}` | " + " | ".join([
            _fmt(f.get("pass@1")), _fmt(f.get("strict_pass@1")), _fmt(f.get(f"pass@{n}")),
            _fmt(f.get(f"strict_pass@{n}")), _diff_cell(d.get("strict_pass@1")) or "–",
            _diff_cell(d.get(f"strict_pass@{n}")) or "–",
            _fmt(f.get("strict_differs"), 1, pct=True) + "%"]) + " |")
    return lines


def _pass_at_k_lines(methods: dict, baseline: Optional[str], n: int) -> list:
    """pass@k at k = 1, 2, 4, ..., n per method, each with its paired difference against the baseline."""
    ks = report_ks(n)
    lines = ["", f"pass@k (± SE; below it, Δ against `{baseline}` ± paired SE, problems won/lost):", "",
             "| method | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
    for name, m in methods.items():
        cells = []
        for k in ks:
            cell = _fmt(m["figures"].get(f"pass@{k}"))
            diff = _diff_cell((m.get("vs_baseline") or {}).get(f"pass@{k}"))
            cells.append(cell + (f"<br>Δ {diff}" if diff else ""))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict) -> str:
    lines = [f"# bench_quality: {doc.get('model')}", ""]
    st = doc.get("settings", {})
    lines.append(f"n = {st.get('n')} samples per problem, max {st.get('max_tokens')} new tokens, "
                 f"limit {st.get('limit')}, concurrency {st.get('concurrency')}; ± = bootstrap SE over problems "
                 f"({st.get('bootstrap')} resamples). Server warm start: {doc.get('server', {}).get('warm_start')}.")
    if st.get("diversity"):
        lines += ["", f"Diversity (Vendi, cos, dist-n) measured {st['diversity']}."]
    lines.append("")
    for task, t in doc["tasks"].items():
        methods = t["methods"]
        if not methods:
            continue
        n = st.get("n")
        correct = any("pass@1" in m["figures"] for m in methods.values())
        head = ["method"]
        if correct:
            head += ["pass@1", f"pass@{n}"]
        pairs = any("distinct2_pair" in m["figures"] for m in methods.values())
        head += ["Vendi", "cos", "dist-2", "dist-3"] + (["dist-2 pair"] if pairs else []) + \
            ["PPL", ">1 cand (ESamp rows)", "uncertain pos.", "tokens", "trunc.", "tok/s", "problems"]
        lines += [f"## {task} (baseline for paired differences: {t.get('baseline')})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in methods.items():
            f = m["figures"]
            row = [f"`{name}`"]
            if correct:
                row += [_fmt(f.get("pass@1")), _fmt(f.get(f"pass@{n}"))]
            row += [_fmt(f.get("vendi"), 2), _fmt(f.get("cosine")), _fmt(f.get("distinct2")),
                    _fmt(f.get("distinct3"))] + ([_fmt(f.get("distinct2_pair"))] if pairs else []) + [
                    _fmt(f.get("ppl"), 2),
                    _fmt(f.get("multi_candidate_share"), 1, pct=True) + ("%" if f.get("multi_candidate_share",
                                                                                    {}).get("mean") is not None
                                                                     else ""),
                    _fmt(f.get("uncertain_share"), 1, pct=True) + ("%" if f.get("uncertain_share", {}).get("mean")
                                                                   is not None else ""),
                    _fmt(f.get("completion_tokens"), 0), _fmt(f.get("truncated"), 2),
                    f"{m['tokens_per_s']:.1f}" if m.get("tokens_per_s") else "–",
                    f"{m['complete_problems']}" + (f" (+{m['missing_problems']} missing)"
                                                   if m["missing_problems"] else "")]
            lines.append("| " + " | ".join(row) + " |")
        diffs = [(name, m["vs_baseline"]) for name, m in methods.items() if m.get("vs_baseline")]
        if diffs:
            keys = [k for k in (["pass@1", f"pass@{n}"] if correct else []) + ["vendi", "distinct2", "nll"]] + \
                (["distinct2_pair"] if pairs else [])
            lines += ["", f"Paired differences against `{t.get('baseline')}` (mean ± SE; wins/losses over problems):",
                      "", "| method | " + " | ".join(f"Δ {k}" for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
            for name, d in diffs:
                cells = [_diff_cell(d.get(k)) or "–" for k in keys]
                lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        if correct and n and n > 2:
            lines += _pass_at_k_lines(methods, t.get("baseline"), n)
        if correct and n:
            lines += _strict_lines(methods, t.get("baseline"), n)
        lines += _frontier_lines(t, "gaps")
        lines += _frontier_lines(t, "gaps_concave")
        lines.append("")
    if doc.get("skipped_methods"):
        lines += ["Skipped methods:", ""] + [f"- `{k}`: {v}" for k, v in doc["skipped_methods"].items()] + [""]
    lines += ["Columns: Vendi and cos(ine) over MiniLM embeddings of each problem's n samples; dist-n = distinct "
              "n-grams over words; PPL = exp(mean NLL per token) under the served model; >1 cand = share of the "
              "ESamp-sampled decode rows with more than one candidate (server); uncertain pos. = share of "
              "completion positions where the model's 2nd token is within 10x of its 1st (T=1); trunc. = share "
              "cut at max tokens; tok/s = generated tokens over block wall time at the given concurrency.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def _style(method: dict):
    fam = method["family"]
    if fam == "esamp":
        marker = "o" if method["init"] == "random" else "^"
        color = "tab:blue" if method["init"] == "random" else "tab:red"
        return dict(marker=marker, color=color, mfc="none" if method["min_p"] > 0 else color, ms=8)
    if fam == "sharpen":
        return dict(marker="s", color="tab:green", mfc="none" if method["min_p"] > 0 else "tab:green", ms=8)
    return dict(marker="D", color="0.4", mfc="0.4", ms=6)


def _xy(figs: dict, key: str):
    f = figs.get(key) or {}
    return f.get("mean"), f.get("se")


def plot_pass_at_k(doc: dict, path: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [(name, t) for name, t in doc["tasks"].items()
             if any("pass@1" in m["figures"] for m in t["methods"].values())]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, (name, t) in zip(axes[0], tasks):
        for mname, m in t["methods"].items():
            ks = sorted(int(k.split("@")[1]) for k in m["figures"] if k.startswith("pass@"))
            ys = [m["figures"][f"pass@{k}"]["mean"] for k in ks]
            es = [m["figures"][f"pass@{k}"]["se"] or 0.0 for k in ks]
            st = _style(m["method"])
            ls = "-" if m["method"]["family"] != "plain" else "--"
            ax.errorbar(ks, ys, yerr=es, label=mname, capsize=2, ls=ls, lw=1.2, marker=st["marker"], ms=4)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k")
        ax.xaxis.get_major_locator().set_params(integer=True)
        top = max([f["mean"] + (f["se"] or 0.0) for m in t["methods"].values() for k, f in m["figures"].items()
                   if k.startswith("pass@") and f["mean"] is not None] + [0.0])
        ax.set_ylim(-0.02, min(1.02, max(0.1, top * 1.1 + 0.02)))
        ax.set_title(f"{name}: pass@k ({doc.get('model')})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _frontier_panel(ax, t: dict, xkey: str, ykey: str, xlabel: str, ylabel: str, title: str):
    sweep = []
    for name, m in t["methods"].items():
        x, xe = _xy(m["figures"], xkey)
        y, ye = _xy(m["figures"], ykey)
        if x is None or y is None:
            continue
        meth = m["method"]
        if meth["family"] == "plain" and meth["top_p"] == 1.0 and meth["min_p"] == 0.0:
            sweep.append((meth["temperature"], x, y, xe, ye))
            continue
        st = _style(meth)
        ax.errorbar([x], [y], xerr=[xe or 0.0], yerr=[ye or 0.0], fmt=st["marker"], color=st["color"],
                    mfc=st["mfc"], ms=st["ms"], capsize=2, label=name)
        ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if sweep:
        sweep.sort()
        ax.errorbar([s[1] for s in sweep], [s[2] for s in sweep], xerr=[s[3] or 0.0 for s in sweep],
                    yerr=[s[4] or 0.0 for s in sweep], fmt="-", color="black", marker=".", capsize=2,
                    label="temperature sweep")
        for temp, x, y, _, _ in sweep:
            ax.annotate(f"T={temp:g}", (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
        # the fit the gaps are read off: perplexity is fitted as its log, the mean NLL (frontier.py)
        import numpy as np

        to_fit, from_fit = (np.log, np.exp) if xkey == "ppl" else (np.asarray, np.asarray)
        fit = concave_fit(to_fit([s[1] for s in sweep]), [s[2] for s in sweep])
        if fit is not None and len(sweep) > 2:
            grid = np.linspace(*to_fit([min(s[1] for s in sweep), max(s[1] for s in sweep)]), 50)
            ax.plot(from_fit(grid), np.polyval(fit, grid), ls=":", color="black", lw=1,
                    label="concave fit of the sweep")
    if xkey == "ppl":
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def plot_frontier(doc: dict, path: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [(name, t) for name, t in doc["tasks"].items() if t["methods"]]
    if not tasks:
        return None
    n = doc.get("settings", {}).get("n")
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 4.5 * len(tasks)), squeeze=False)
    for row, (name, t) in zip(axes, tasks):
        correct = any("pass@1" in m["figures"] for m in t["methods"].values())
        has_vendi = any((m["figures"].get("vendi") or {}).get("mean") is not None for m in t["methods"].values())
        div, div_label = ("vendi", "Vendi score (diversity)") if has_vendi else ("distinct3", "distinct-3 (diversity)")
        if correct:
            _frontier_panel(row[0], t, "pass@1", f"pass@{n}", "pass@1 (quality)", f"pass@{n}",
                            f"{name}: pass@{n} vs pass@1")
            _frontier_panel(row[1], t, "pass@1", div, "pass@1 (quality)", div_label, f"{name}: diversity vs pass@1")
        else:
            ppl = "perplexity under the served model (log; lower = better)"
            _frontier_panel(row[0], t, "ppl", div, ppl, div_label, f"{name}: diversity vs perplexity")
            _frontier_panel(row[1], t, "ppl", "distinct2", ppl, "distinct-2", f"{name}: distinct-2 vs perplexity")
    fig.suptitle(f"Quality–diversity frontier ({doc.get('model')}, n={n})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_all(out_dir: Path, doc: dict, plots: bool = True) -> Dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    write_json(files["json"], doc)
    stale = out_dir / "results.json.gz"          # a v1 results.json committed compressed: replaced by the above
    if stale.exists():
        stale.unlink()
    files["markdown"].write_text(markdown(doc))
    if plots:
        for key, fn in (("pass_at_k", plot_pass_at_k), ("frontier", plot_frontier)):
            p = fn(doc, out_dir / f"{key}.png")
            if p is not None:
                files[key] = p
    return {k: str(v) for k, v in files.items()}
