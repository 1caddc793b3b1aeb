"""results.json schema v2 (no inlined samples) reproduces the v1 tables from the sample files.

The fixture (tests/bench/fixtures/quality_v1) is the first 4 problems of the committed HumanEval-40 x n=8 folder for
three methods: their sample files, and the results.json (gzipped) and results.md that the v1 code (commit 00eaf98)
built from them with ``--report-only --limit 4 --bootstrap 200``.
"""
import gzip
import json
import math
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "quality_v1"
METHODS = "t0.8,t1.0,esamp_b0.25_warm"
ARGV = ["--report-only", "--no-progress", "--no-plots", "--tasks", "humaneval", "--limit", "4", "--n", "8",
        "--max-tokens", "512", "--concurrency", "10", "--methods", METHODS, "--bootstrap", "200",
        "--diversity", "reply"]        # the v1 measure of diversity (the default measures the generated code only)


def _v1() -> dict:
    with gzip.open(FIXTURE / "results_v1.json.gz", "rt") as f:
        return json.load(f)


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(FIXTURE / "samples", out / "samples")
    shutil.copy(FIXTURE / "run.json", out / "run.json")
    return out


def _close(a, b, path=""):
    """Every key of ``a`` in ``b`` with the same value (``b`` may have more: figures added since v1); floats within
    1e-9 relative (MiniLM on another CPU may differ in the last bits: 1e-4)."""
    if isinstance(a, dict):
        assert set(a) <= set(b), (path, set(a) - set(b))
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        tol = 1e-4 if any(k in path for k in ("vendi", "cosine")) else 1e-9
        assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_report_only_rebuilds_the_v1_tables_from_the_sample_files(folder):
    from sglang_esamp.bench.quality.cli import main
    from sglang_esamp.bench.quality.report import SCHEMA

    assert main(ARGV + ["--output", str(folder)]) == 0
    doc = json.loads((folder / "results.json").read_text())
    v1 = _v1()
    assert doc["schema"] == SCHEMA != v1["schema"] and "samples" not in doc and len(v1["samples"]) == 3 * 4 * 8
    assert doc["sample_files"] == {"humaneval": {m: f"samples/humaneval/{m}.jsonl.gz" for m in METHODS.split(",")}}
    _close(v1["tasks"], doc["tasks"], "tasks")
    # every line of the v1 tables, in order (v2 adds the concave-fit frontier table and a line on diversity)
    v2_lines = iter((folder / "results.md").read_text().splitlines())
    missing = [line for line in (FIXTURE / "results_v1.md").read_text().splitlines()
               if not any(line == other for other in v2_lines)]
    assert missing == []


def test_migration_drops_only_the_inlined_samples_and_checks_them_against_the_files(folder):
    from sglang_esamp.bench.quality import migrate
    from sglang_esamp.bench.quality.report import markdown

    (folder / "results.json.gz").write_bytes((FIXTURE / "results_v1.json.gz").read_bytes())
    assert "96 inlined samples" in migrate.migrate(folder)
    v1, v2 = _v1(), json.loads((folder / "results.json").read_text())
    assert not (folder / "results.json.gz").exists()
    assert {k: v for k, v in v1.items() if k not in ("samples", "schema")} == \
        {k: v for k, v in v2.items() if k not in ("sample_files", "schema")}
    assert markdown(v2) == markdown(v1) == (FIXTURE / "results_v1.md").read_text()
    assert migrate.migrate(folder) is None                         # already v2


def test_migration_refuses_when_a_sample_file_differs_from_the_inlined_sample(folder):
    from sglang_esamp.bench.quality import migrate

    (folder / "results.json.gz").write_bytes((FIXTURE / "results_v1.json.gz").read_bytes())
    path = folder / "samples" / "humaneval" / "t1.0.jsonl.gz"
    recs = [json.loads(line) for line in gzip.open(path, "rt")]
    recs[5]["text"] += " "                                          # one sample no longer as results.json has it
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    with pytest.raises(RuntimeError, match="1 inlined sample"):
        migrate.migrate(folder)
    assert (folder / "results.json.gz").exists() and not (folder / "results.json").exists()


def test_skip_leaves_out_the_first_problems_and_is_checked(folder, capsys):
    """--skip N: a run over problems N..limit-1 (one block split over two processes); its report covers its slice."""
    from sglang_esamp.bench.quality.cli import main

    assert main(ARGV + ["--no-embeddings", "--skip", "2", "--output", str(folder)]) == 0
    doc = json.loads((folder / "results.json").read_text())
    assert doc["settings"]["skip"] == 2
    assert {m["complete_problems"] for m in doc["tasks"]["humaneval"]["methods"].values()} == {2}
    assert doc["tasks"]["humaneval"]["problems"] == ["HumanEval/2", "HumanEval/3"]
    for bad in (["--skip", "4"], ["--skip", "-1"]):
        with pytest.raises(SystemExit):
            main(ARGV + bad + ["--output", str(folder)])
    assert "--skip must be" in capsys.readouterr().err
