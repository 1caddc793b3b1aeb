"""benchmarks/gpu/bundle.py: the plan of what travels to the GPU machine, its size arithmetic, the wheel re-store,
and the site hooks that load ESamp on the device (issue #39). No network: the real build is a manual step
(bash benchmarks/gpu/bundle.sh), its sizes are in docs/performance.md."""
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "benchmarks" / "gpu" / "bundle.py")
gb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gb)


def test_the_plan_is_consistent():
    assert gb.plan_problems() == []
    names = {gb.norm(n) for n, _ in gb.WHEELS}
    # what SGLang's server imports at start-up and the GPU image lacks (the iteration of SGLANG_ON_CPU.md)
    assert {"fastapi", "uvicorn", "pyzmq", "orjson", "msgspec", "pydantic", "openai", "xgrammar", "apache-tvm-ffi",
            "compressed-tensors", "gguf", "ipython", "soundfile", "setproctitle", "pybase64", "dill",
            "partial-json-parser", "python-multipart", "jsonschema"} <= names
    assert gb.SGLANG == ("sglang", "0.5.23")
    assert "[sglang.srt.plugins]\nesamp = sglang_esamp.plugin:register" in gb.entry_points()


def test_the_check_mode_runs_without_network_and_fits():
    """CI's guard: the plan is valid and the repository plus the (expected or built) bundle fits in 56 MiB, 8 under
    the device's 64 (issue #45) -- when this fails, the lease's command is close to no longer travelling: see
    docs/performance.md for where the room went."""
    proc = subprocess.run(["bash", "benchmarks/gpu/bundle.sh", "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert "[bundle] travel: tracked" in proc.stdout and "of 56.00 MiB" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_size_arithmetic(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "b" / "sub").mkdir()
    (tmp_path / "b" / "sub" / "y.bin").write_bytes(b"\0" * 24)
    sizes = gb.travel_sizes(tmp_path / "b")
    assert sizes["bundle"] == 1024
    assert sizes["total"] == sizes["tracked"] + sizes["untracked"] + sizes["shared"] + 1024
    assert sizes["headroom"] == gb.LIMIT_BYTES - sizes["total"] and gb.LIMIT_BYTES == 56 * 2**20
    assert sizes["tracked"] > 10 * 2**20          # the repository itself is most of what travels
    assert gb.travel_sizes(tmp_path / "b", bundle_bytes=5)["bundle"] == 5


def _fake_wheel(path: Path):
    files = {"pkg/__init__.py": b"x = 1\n", "pkg/big.so": b"\x7fELF" + b"\0" * 5000,
             "pkg/keep/data.txt": b"keep\n", "pkg-1.0.dist-info/METADATA": b"Name: pkg\nVersion: 1.0\n"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        record = "".join(f"{n},{gb._record_hash(d)},{len(d)}\n" for n, d in files.items())
        z.writestr("pkg-1.0.dist-info/RECORD", record + "pkg-1.0.dist-info/RECORD,,\n")


def test_restore_stores_uncompressed_drops_members_and_rewrites_record(tmp_path):
    src, dst = tmp_path / "pkg-1.0-py3-none-any.whl", tmp_path / "out.whl"
    _fake_wheel(src)
    dropped = gb.restore(src, dst, (r"pkg/[^/]*\.so",))
    assert dropped == {"files": 1, "bytes": 5004}
    with zipfile.ZipFile(dst) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert sorted(z.namelist()) == ["pkg-1.0.dist-info/METADATA", "pkg-1.0.dist-info/RECORD", "pkg/__init__.py",
                                        "pkg/keep/data.txt"]
        record = z.read("pkg-1.0.dist-info/RECORD").decode()
    assert "big.so" not in record and "pkg/__init__.py,sha256=" in record
    # a wheel with nothing to drop keeps its RECORD byte for byte
    gb.restore(src, tmp_path / "same.whl")
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(tmp_path / "same.whl") as b:
        assert a.read("pkg-1.0.dist-info/RECORD") == b.read("pkg-1.0.dist-info/RECORD")


def test_the_site_hooks_load_the_stand_in_and_the_plugin_in_every_interpreter(tmp_path):
    """What install writes besides the wheels: PYTHONPATH=<site> alone makes a fresh interpreter (as SGLang's spawned
    scheduler is) run the CUDA stand-in's hook and find ESamp's entry point; a shadowed sitecustomize still runs."""
    site = tmp_path / "site"
    gb.write_site_hooks(site, ROOT)
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED_SITECUSTOMIZE_RAN'] = '1'\n")
    code = """
import importlib.metadata as md, json, os, sys
eps = [e for e in md.entry_points(group="sglang.srt.plugins") if e.name == "esamp"]
print(json.dumps({
    "finder": any(type(f).__name__ == "SglKernelStandInFinder" for f in sys.meta_path),
    "eps": sorted({str(e.dist._path) for e in eps if hasattr(e.dist, "_path")}),
    "value": sorted({e.value for e in eps}),
    "chained": os.environ.get("SHADOWED_SITECUSTOMIZE_RAN"),
}))"""
    env = {k: v for k, v in os.environ.items() if k not in ("SGLANG_USE_CPU_ENGINE", "PYTHONPATH")}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{other}", SGLANG_ESAMP_CUDA_STANDIN="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["finder"] is True and got["chained"] == "1"
    assert got["value"] == ["sglang_esamp.plugin:register"]
    assert any(p.startswith(str(site)) for p in got["eps"])


@pytest.mark.skipif(not (gb.BUNDLE_DIR / gb.ARCHIVE).exists(), reason="no gpu_bundle/ built on this machine")
def test_a_built_bundle_installs_for_cp312(tmp_path):
    out = gb.install(gb.BUNDLE_DIR, tmp_path / "t", ROOT, cross=True)
    site = Path(out["site"])
    assert (site / "sglang" / "srt" / "entrypoints" / "http_server.py").exists()
    assert not list((site / "sglang" / "srt" / "rust_extensions").glob("*.so"))
    assert not (site / "sglang" / "multimodal_gen").exists()
    assert (site / "fastapi").is_dir() and (site / "esamp_device.pth").exists()
    assert (Path(out["tokenizer"]) / "tokenizer.json").exists()
