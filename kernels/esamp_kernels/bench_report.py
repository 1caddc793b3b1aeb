"""Table, JSON and plot of ``esamp_kernels.bench`` results (one dict per measured shape)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

SHAPE_KEYS = ("R", "C", "H", "V", "preset", "W", "bank")


def shape_label(row: Dict) -> str:
    return " ".join(f"{k}={row[k]}" for k in SHAPE_KEYS if k in row and k != "V")


def speedup(row: Dict) -> Optional[float]:
    if row.get("triton_us") is None:
        return None
    return row["torch_us"] / row["triton_us"]


def print_table(results: List[Dict]) -> None:
    fmt = "{:<18} {:<44} {:>11} {:>11} {:>8} {:>10}"
    print(fmt.format("op", "shape", "torch us", "triton us", "speedup", "max|diff|"))
    for row in sorted(results, key=lambda r: r["op"]):
        sp = speedup(row)
        print(fmt.format(row["op"], shape_label(row), f"{row['torch_us']:.1f}",
                         "-" if row["triton_us"] is None else f"{row['triton_us']:.1f}",
                         "-" if sp is None else f"{sp:.2f}x",
                         "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"))


def save_json(path: Path, meta: Dict, results: List[Dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for row in results:
        row["speedup"] = speedup(row)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


def save_plot(path: Path, results: List[Dict], title: str) -> bool:
    """Per operation, time per call of each implementation by shape (log scale). False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = sorted({r["op"] for r in results})
    fig, axes = plt.subplots(len(ops), 1, figsize=(14, 4.5 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        rows = [r for r in results if r["op"] == op]
        xs = range(len(rows))
        ax.plot(xs, [r["torch_us"] for r in rows], "o-", label="torch")
        if any(r["triton_us"] is not None for r in rows):
            ax.plot(xs, [r["triton_us"] if r["triton_us"] is not None else float("nan") for r in rows],
                    "s-", label="triton")
        ax.set_yscale("log")
        ax.set_ylabel("us per call")
        ax.set_title(f"{op} ({title})")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([shape_label(r) for r in rows], rotation=60, ha="right", fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
