"""The GPU bundle: what the lent GPU machine lacks to run SGLang's text server with ESamp, in one carried folder.

``bash benchmarks/gpu/bundle.sh`` (= ``python benchmarks/gpu/bundle.py build``) makes ``gpu_bundle/`` (git-ignored;
a device command names it in ``carry``), prints its size and the total that would travel, and fails above 56 MiB.
``--check`` (CI, no network) validates the plan and the size arithmetic; ``install`` (on the device) unpacks it.

Decisions (issue #39):

* **What the image has** (docs of the lent machines, KINDS.md, read 2026-11-17; assumed, re-read by the device
  check's env step): Python 3.12, torch 2.11 (CUDA 13), Triton 3.6, transformers 5.17, tokenizers 0.23.2,
  torchvision 0.26, numpy 2.5, safetensors, accelerate, aiohttp, requests, httpx, anyio, h11, click, attrs,
  annotated-doc, psutil, pillow, einops, sentencepiece, tiktoken, uvloop, prometheus-client, packaging, tqdm,
  pyyaml, regex, jinja2, pygments, huggingface-hub, xxhash, msgpack, scipy, pandas, pyarrow, protobuf, ninja,
  nvidia-ml-py, cuda-bindings, and nvcc. ``ASSUMED_PRESENT`` lists them; nothing there is carried.
* **What is carried** (``WHEELS``): the distributions SGLang 0.5.23's server imports that the image lacks, found by
  importing the server's modules (fake CUDA, the stand-in ``sgl_kernel``) and mapping every imported top-level
  module to its distribution, plus their install requirements. Versions are the ones this project's CPU venv runs
  SGLang 0.5.23 with. ``typing-extensions`` 4.16 is carried although the image has one: pydantic 2.14 needs >= 4.16
  and an older one breaks it; it is backwards compatible. Not carried: sgl-kernel (373 MB; ``esamp_gpu_shims``
  in ``benchmarks/gpu/shims`` stands in), flashinfer (the triton attention and pytorch sampling backends need none
  of it).
* **sglang's wheel, trimmed**: 39 MB as published; 41 MB of it (unpacked) are Rust extensions a text HTTP server
  never loads (gRPC, the Rust HTTP server, a benchmark client, multimodal processors, the opt-in Rust radix tree)
  and 23 MB the diffusion runtime (``sglang.multimodal_gen``, only ``sglang generate``); SGLang's test kits go
  too (but ``scripted_runtime``, which the scheduler may import). Those are dropped (``DROP``, which also trims
  apache-tvm-ffi's test library and bundled sources) and RECORD rewritten; everything else stays, JIT kernel
  sources included (the image has nvcc). A CPU server ran from the trimmed package (checked 2026-12-06).
* **Size**: every wheel is re-stored uncompressed and the lot packed into one solid ``bundle.tar.xz`` -- a solid
  archive shares its dictionary across files, which per-file zip deflate cannot: the trimmed sglang packs to about
  a quarter of its wheel. The device unpacks it and pip-installs the stored wheels (``--no-index --no-deps``).
* **Tokenizer**: the Qwen2.5 tokenizer and configs of the locally converted ``qwen2.5-coder-0.5b-instruct``
  (``TOKENIZER_FILES``), never its weights: the device builds a random-weight model from the config.
* **Install** (``install --target DIR``): ``DIR/site`` gets the wheels (pip ``--target``), a ``sitecustomize.py``
  that makes ``DIR/site`` a site directory (so its ``.pth`` runs in every process, SGLang's spawned scheduler
  included; it chains to a ``sitecustomize`` it shadows), ``esamp_device.pth`` (the repo and ``benchmarks/gpu/shims``
  on ``sys.path``, the CUDA stand-in's import hook) and an ``sglang_esamp`` dist-info carrying the plugin entry point
  from pyproject.toml (so SGLang's ``load_plugins`` finds ESamp without building the project).
  ``export PYTHONPATH=DIR/site``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import travel  # noqa: E402  (the sibling module: what a device call carries)

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_DIR = ROOT / "gpu_bundle"
SHIMS = "benchmarks/gpu/shims"      # the CUDA stand-in for sgl_kernel (package esamp_gpu_shims), outside the wheel
ARCHIVE = "bundle.tar.xz"
MANIFEST = "manifest.json"
LIMIT_BYTES = travel.LIMIT_BYTES    # what may travel per call, tree + bundle: 56 MiB, 8 under the device's 64
# the last real build measured 16_977_818 bytes (2026-12-06); --check uses this when no bundle is built here
EXPECTED_BUNDLE_BYTES = 17_000_000

PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

SGLANG = ("sglang", "0.5.23")
# wheel members left out (regular expressions over the member path), per distribution
DROP = {
    "sglang": (
        r"sglang/srt/rust_extensions/_[a-z]+\.cpython-[^/]*\.so",   # gRPC, Rust HTTP server, bench, multimodal
        r"sglang/srt/mem_cache/rust_tree_core/[^/]*\.so",           # the opt-in Rust radix tree
        r"sglang/multimodal_gen/.*",                                # the diffusion runtime (sglang generate)
        r"sglang/test/(?!__init__\.py$|scripted_runtime/).*",      # SGLang's test kits (the scheduler may import
                                                                    # scripted_runtime, nothing else of them)
    ),
    "apache-tvm-ffi": (
        r"tvm_ffi/lib/libtvm_ffi_testing\.so",                      # loaded only by tvm_ffi's own tests
        r"tvm_ffi/3rdparty/libbacktrace/.*",                        # sources of a library already linked in
    ),
}
SGLANG_DROP = DROP["sglang"]

# (distribution, version): what the server imports and the image lacks, with their requirements
WHEELS: Tuple[Tuple[str, str], ...] = (
    # HTTP server
    ("fastapi", "0.165.0"), ("starlette", "1.10.0"), ("uvicorn", "0.55.0"), ("python-multipart", "0.0.34"),
    ("opentelemetry-api", "1.45.2"),
    ("pydantic", "2.14.4"), ("pydantic-core", "2.50.5"), ("annotated-types", "0.8.0"),
    ("typing-inspection", "0.4.5"), ("typing-extensions", "4.16.0"),
    # SGLang's processes and protocol
    ("pyzmq", "27.3.0"), ("orjson", "3.13.0"), ("msgspec", "0.23.0"), ("setproctitle", "1.3.8"),
    ("pybase64", "1.5.1"), ("partial-json-parser", "0.2.1.1.post7"), ("dill", "0.4.1"),
    # OpenAI-compatible routes
    ("openai", "2.8.0"), ("distro", "1.9.0"), ("jiter", "0.19.0"), ("sniffio", "1.3.1"),
    # grammar backend, JIT kernels' FFI, quantization configs, GGUF, audio (imported at start-up)
    ("xgrammar", "0.2.7"), ("apache-tvm-ffi", "0.1.11"), ("compressed-tensors", "0.18.0"), ("loguru", "0.7.3"),
    ("gguf", "0.19.0"), ("soundfile", "0.14.0"), ("cffi", "2.1.1"), ("pycparser", "3.12"),
    ("jsonschema", "4.26.0"), ("jsonschema-specifications", "2025.9.1"), ("referencing", "0.37.0"),
    ("rpds-py", "2026.9.1"),
    # IPython: sglang.utils does ``from IPython.display import HTML, display``, which needs only traitlets (checked
    # with jedi, parso, prompt-toolkit, pexpect, stack-data, wcwidth, ... made unimportable: 3 MB of the archive)
    ("ipython", "9.19.1"), ("traitlets", "5.16.1"),
)

ASSUMED_PRESENT = (
    "torch", "triton", "transformers", "tokenizers", "torchvision", "numpy", "safetensors", "accelerate", "aiohttp",
    "requests", "httpx", "anyio", "h11", "click", "attrs", "annotated-doc", "psutil", "pillow", "einops",
    "sentencepiece", "tiktoken", "uvloop", "prometheus-client", "packaging", "tqdm", "pyyaml", "regex", "jinja2",
    "pygments", "huggingface-hub", "xxhash", "msgpack", "scipy", "pandas", "pyarrow", "protobuf", "ninja",
    "nvidia-ml-py", "cuda-bindings",
)

TOKENIZER_MODEL = "qwen2.5-coder-0.5b-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json",
                   "generation_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
TOKENIZER_REQUIRED = ("tokenizer.json", "tokenizer_config.json", "config.json")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------ plan and size arithmetic


def plan_problems() -> List[str]:
    """Everything wrong with the plan itself (no network, no files needed)."""
    out = []
    names = [norm(n) for n, _ in WHEELS]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        out.append(f"duplicate wheels: {dup}")
    for n, v in WHEELS:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n) or not re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v):
            out.append(f"bad pin {n}=={v}")
    carried_and_present = sorted(set(names) & {norm(n) for n in ASSUMED_PRESENT} - {"typing-extensions"})
    if carried_and_present:
        out.append(f"carried although assumed present: {carried_and_present}")
    if norm(SGLANG[0]) in names:
        out.append("sglang is listed in WHEELS (it is trimmed separately)")
    carried = {norm(SGLANG[0])} | set(names)
    for dist, patterns in DROP.items():
        if norm(dist) not in carried:
            out.append(f"drop rules for {dist}, which is not carried")
        for pattern in patterns:
            re.compile(pattern)
    if not set(TOKENIZER_REQUIRED) <= set(TOKENIZER_FILES):
        out.append("TOKENIZER_REQUIRED not within TOKENIZER_FILES")
    try:
        entry_points()
    except Exception as e:  # noqa: BLE001
        out.append(f"the plugin entry point cannot be read from pyproject.toml: {e}")
    return out


def dir_size(path: Path) -> int:
    return sum(travel.file_bytes(p) for p in travel.files_under(Path(path)))


def travel_sizes(bundle_dir: Path = BUNDLE_DIR, bundle_bytes: Optional[int] = None) -> Dict[str, int]:
    """What a device call that carries the bundle would copy (benchmarks/gpu/travel.py counts it)."""
    sizes = travel.measure(ROOT, carry=(bundle_dir,), carry_bytes=bundle_bytes)
    sizes["bundle"] = sizes.pop("carried")
    return sizes


mib = travel.mib


def print_sizes(sizes: Dict[str, int], note: str = "") -> None:
    print(f"[bundle] travel: tracked {mib(sizes['tracked'])} + untracked {mib(sizes['untracked'])} + shared "
          f"{mib(sizes['shared'])} + bundle {mib(sizes['bundle'])}{note} = {mib(sizes['total'])} of "
          f"{mib(sizes['limit'])} (headroom {mib(sizes['headroom'])}; the device refuses above "
          f"{mib(travel.DEVICE_LIMIT_BYTES)})", flush=True)


def entry_points() -> str:
    """The ``sglang.srt.plugins`` entry points of this project (pyproject.toml), as entry_points.txt text."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]["sglang.srt.plugins"]
    if not eps:
        raise ValueError("no sglang.srt.plugins entry point")
    lines = ["[sglang.srt.plugins]"] + [f"{k} = {v}" for k, v in sorted(eps.items())]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ build (this machine, network)


def download(dest: Path) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={v}" for n, v in (SGLANG, *WHEELS)]
    have = {norm(p.name.split("-")[0]) + "==" + p.name.split("-")[1] for p in dest.glob("*.whl")}
    missing = [s for s in specs if norm(s.split("==")[0]) + "==" + s.split("==")[1] not in have]
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--python-version", PYTHON_VERSION, "--implementation", "cp", "--dest", str(dest)]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        print(f"[bundle] pip download {len(missing)} wheels", flush=True)
        subprocess.run(cmd + missing, check=True)
    wheels = []
    for n, v in (SGLANG, *WHEELS):
        found = [p for p in dest.glob("*.whl")
                 if norm(p.name.split("-")[0]) == norm(n) and p.name.split("-")[1] == v]
        if len(found) != 1:
            raise SystemExit(f"expected one wheel for {n}=={v} in {dest}, found {[p.name for p in found]}")
        wheels.append(found[0])
    return wheels


def _record_hash(data: bytes) -> str:
    import base64

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def restore(src: Path, dest: Path, drop: Tuple[str, ...] = ()) -> Dict[str, int]:
    """Rewrite a wheel with uncompressed members (ZIP_STORED), leaving out the members matching ``drop`` and their
    RECORD lines. Returns what was dropped."""
    rx = [re.compile(p) for p in drop]
    dropped = {"files": 0, "bytes": 0}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        kept = []
        for info in zin.infolist():
            if info.filename == record_name:
                continue
            if any(r.fullmatch(info.filename) for r in rx):
                dropped["files"] += 1
                dropped["bytes"] += info.file_size
                continue
            data = zin.read(info)
            zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            zi.external_attr = info.external_attr
            zi.compress_type = zipfile.ZIP_STORED
            zout.writestr(zi, data)
            kept.append(info.filename)
        if dropped["files"]:
            lines = [ln for ln in zin.read(record_name).decode().splitlines()
                     if ln and ln.split(",")[0] in kept]
            lines.append(f"{record_name},,")
            record = ("\n".join(lines) + "\n").encode()
        else:
            record = zin.read(record_name)
        zi = zipfile.ZipInfo(record_name, date_time=(2026, 1, 1, 0, 0, 0))
        zout.writestr(zi, record)
    return dropped


def tokenizer_dir() -> Path:
    sys.path.insert(0, str(ROOT))
    from sglang_esamp.models import resolve_model

    return Path(resolve_model(TOKENIZER_MODEL))


def build(bundle_dir: Path, cache: Path) -> int:
    problems = plan_problems()
    if problems:
        print("[bundle] plan problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    t0 = time.time()
    wheels = download(cache)
    downloaded = sum(p.stat().st_size for p in wheels)
    with tempfile.TemporaryDirectory(prefix="esamp-bundle-") as tmp:
        stage = Path(tmp) / "stage"
        (stage / "wheels").mkdir(parents=True)
        manifest = {"built": time.strftime("%Y-%m-%d %H:%M:%S"), "python": PYTHON_VERSION,
                    "platforms": list(PLATFORMS), "assumed_present": list(ASSUMED_PRESENT), "wheels": [],
                    "tokenizer_model": TOKENIZER_MODEL, "tokenizer_files": []}
        for w in wheels:
            rules = next((v for k, v in DROP.items() if norm(k) == norm(w.name.split("-")[0])), ())
            dropped = restore(w, stage / "wheels" / w.name, rules)
            manifest["wheels"].append({"file": w.name, "published_bytes": w.stat().st_size,
                                       "stored_bytes": (stage / "wheels" / w.name).stat().st_size,
                                       **({"dropped": dropped} if rules else {})})
        tok_src = tokenizer_dir()
        (stage / "tokenizer").mkdir()
        for f in TOKENIZER_FILES:
            if (tok_src / f).exists():
                shutil.copy2(tok_src / f, stage / "tokenizer" / f)
                manifest["tokenizer_files"].append(f)
        missing = [f for f in TOKENIZER_REQUIRED if f not in manifest["tokenizer_files"]]
        if missing:
            print(f"[bundle] tokenizer files missing in {tok_src}: {missing}", file=sys.stderr)
            return 2
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        bundle_dir.mkdir(parents=True)
        print("[bundle] packing (solid xz) ...", flush=True)
        _pack(stage, bundle_dir / ARCHIVE)
        manifest["archive_bytes"] = (bundle_dir / ARCHIVE).stat().st_size
        (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    sg = next(w for w in manifest["wheels"] if w["file"].startswith("sglang-"))
    print(f"[bundle] {len(wheels)} wheels, published {mib(downloaded)}; sglang {mib(sg['published_bytes'])} "
          f"published, dropped {sg['dropped']['files']} files ({mib(sg['dropped']['bytes'])} unpacked); "
          f"tokenizer {manifest['tokenizer_files']}")
    bundle_bytes = dir_size(bundle_dir)
    print(f"[bundle] {bundle_dir}: {mib(bundle_bytes)} ({bundle_bytes} bytes) in {time.time() - t0:.0f}s")
    sizes = travel_sizes(bundle_dir)
    print_sizes(sizes)
    if sizes["total"] > LIMIT_BYTES:
        print(f"[bundle] FAIL: {mib(sizes['total'])} would travel, over the {mib(LIMIT_BYTES)} limit",
              file=sys.stderr)
        return 1
    return 0


def _pack(stage: Path, archive: Path) -> None:
    """One solid tar.xz; the xz tool (multi-threaded) when there is one, else Python's lzma."""
    members = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    if shutil.which("xz"):
        with open(archive, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", "--owner=0", "--group=0", *members],
                                   stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9e", "-T2", "-c"], stdin=tar.stdout, stdout=out, check=True)
            if tar.wait() != 0:
                raise SystemExit("tar failed")
    else:
        with tarfile.open(archive, "w:xz", preset=9) as tf:
            for m in members:
                tf.add(stage / m, arcname=m)


# ------------------------------------------------------------------ check (CI, no network)


def check(bundle_dir: Path) -> int:
    problems = plan_problems()
    print(f"[bundle] plan: sglang=={SGLANG[1]} trimmed ({len(DROP['sglang'])} drop rules) + {len(WHEELS)} wheels for "
          f"cp{PYTHON_VERSION.replace('.', '')} {PLATFORMS[0]}..; {len(ASSUMED_PRESENT)} distributions assumed on "
          f"the image; tokenizer of {TOKENIZER_MODEL}")
    archive = bundle_dir / ARCHIVE
    if archive.exists():
        manifest = json.loads((bundle_dir / MANIFEST).read_text())
        planned = {f"{norm(n)}=={v}" for n, v in (SGLANG, *WHEELS)}
        built = {f"{norm(w['file'].split('-')[0])}=={w['file'].split('-')[1]}" for w in manifest["wheels"]}
        if planned != built:
            problems.append(f"the bundle in {bundle_dir} does not match the plan (rebuild it): "
                            f"missing {sorted(planned - built)}, extra {sorted(built - planned)}")
        sizes, note = travel_sizes(bundle_dir), " (built)"
    else:
        sizes, note = travel_sizes(bundle_dir, EXPECTED_BUNDLE_BYTES), " (expected: no bundle built here)"
    print_sizes(sizes, note)
    if sizes["total"] > LIMIT_BYTES:
        problems.append(f"{mib(sizes['total'])} would travel, over the {mib(LIMIT_BYTES)} limit")
    for p in problems:
        print(f"[bundle] FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


# ------------------------------------------------------------------ install (the device; standard library + pip)

SITECUSTOMIZE = '''"""Written by benchmarks/gpu/bundle.py install: makes this folder a site directory, so its .pth
files run in every interpreter that has it on PYTHONPATH (SGLang's spawned scheduler and detokenizer included)."""
import os as _os
import site as _site
import sys as _sys

_here = _os.path.dirname(_os.path.abspath(__file__))
_site.addsitedir(_here)
for _p in list(_sys.path):   # run the sitecustomize this one shadows, if any
    _f = _os.path.join(_os.path.abspath(_p or "."), "sitecustomize.py")
    if _os.path.abspath(_p or ".") != _here and _os.path.isfile(_f):
        exec(compile(open(_f).read(), _f, "exec"), {"__name__": "sitecustomize", "__file__": _f})
        break
'''


def write_site_hooks(site_dir: Path, repo: Path) -> None:
    """What makes ``site_dir`` (on PYTHONPATH) load ESamp in every process: ``sitecustomize.py``, the ``.pth`` with
    the repo and the CUDA stand-in's import hook, and a dist-info carrying the plugin entry point."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    repo = Path(repo).resolve()
    paths = "".join(f"{p}\n" for p in (repo, repo / "kernels", repo / SHIMS))
    (site_dir / "esamp_device.pth").write_text(paths + "import esamp_gpu_shims.finder\n")
    info = site_dir / "sglang_esamp-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang-esamp\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points())
    (info / "top_level.txt").write_text("sglang_esamp\n")
    (info / "INSTALLER").write_text("benchmarks/gpu/bundle.py\n")


def install(bundle_dir: Path, target: Path, repo: Path, cross: bool = False) -> Dict[str, object]:
    """Unpack the bundle into ``target`` and pip-install its wheels into ``target/site`` (see the module docstring).
    ``cross``: install the cp312 wheels with an interpreter of another version (the CPU dry run; then ``site`` is
    laid out but not importable here)."""
    t0 = time.time()
    target = target.resolve()
    unpacked = target / "bundle"
    site_dir = target / "site"
    for d in (unpacked, site_dir):
        if d.exists():
            shutil.rmtree(d)
    unpacked.mkdir(parents=True)
    with tarfile.open(bundle_dir / ARCHIVE, "r:xz") as tf:
        if sys.version_info >= (3, 12):
            tf.extractall(unpacked, filter="data")
        else:
            tf.extractall(unpacked)
    wheels = sorted((unpacked / "wheels").glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--target", str(site_dir)]
    if cross:
        cmd += ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
    try:
        subprocess.run(cmd + [str(w) for w in wheels], check=True)
        how = "pip"
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        if cross:
            raise
        print(f"[bundle] pip failed ({e}); unzipping the wheels instead", file=sys.stderr)
        site_dir.mkdir(parents=True, exist_ok=True)
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(site_dir)
        how = "unzip"
    write_site_hooks(site_dir, repo)
    out = {"site": str(site_dir), "tokenizer": str(unpacked / "tokenizer"), "wheels": len(wheels), "installer": how,
           "seconds": round(time.time() - t0, 1), "site_bytes": dir_size(site_dir)}
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu/bundle.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download, trim, pack (needs a package registry)")
    b.add_argument("--out", type=Path, default=BUNDLE_DIR)
    b.add_argument("--cache", type=Path, default=ROOT / ".cache" / "gpu_bundle" / "wheels")
    c = sub.add_parser("check", help="validate the plan and the size arithmetic (no network)")
    c.add_argument("--out", type=Path, default=BUNDLE_DIR)
    i = sub.add_parser("install", help="unpack and install the bundle (the device)")
    i.add_argument("--bundle", type=Path, default=BUNDLE_DIR)
    i.add_argument("--target", type=Path, required=True)
    i.add_argument("--repo", type=Path, default=ROOT)
    i.add_argument("--cross", action="store_true", help="cp312 wheels with another interpreter (dry runs)")
    sub.add_parser("sizes", help="print what would travel now")
    a = p.parse_args(argv)
    if a.cmd == "build":
        return build(a.out, a.cache)
    if a.cmd == "check":
        return check(a.out)
    if a.cmd == "install":
        if not (a.bundle / ARCHIVE).exists():
            print(f"[bundle] no {a.bundle / ARCHIVE}: build it with bash benchmarks/gpu/bundle.sh", file=sys.stderr)
            return 2
        install(a.bundle, a.target, a.repo, cross=a.cross)
        return 0
    print_sizes(travel_sizes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
