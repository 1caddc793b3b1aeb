"""benchmarks/gpu/travel.py counts what a device call copies, exactly as the device tool does (issue #45): tracked
files at their working-tree size, untracked-not-ignored files, shared/ whole, the carried folders; a nested
repository travels without its files, a link as a link, and no file is counted twice."""
import importlib.util
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("travel", ROOT / "benchmarks" / "gpu" / "travel.py")
travel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(travel)


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def _write(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def test_counts_what_travels_and_nothing_else(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    ignore = "ignored.bin\n/bundle/\nshared/local.bin\n"
    (repo / ".gitignore").write_text(ignore)
    _write(repo / "a.bin", 100)
    _write(repo / "gone.bin", 7)
    _write(repo / "edited.bin", 10)
    _write(repo / "shared" / "tracked.bin", 40)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    (repo / "gone.bin").unlink()                    # tracked but deleted: not copied
    _write(repo / "edited.bin", 30)                 # the working-tree size travels, not the committed one
    _write(repo / "new.bin", 5)                     # untracked, not ignored
    _write(repo / "ignored.bin", 1000)              # ignored and not carried: stays behind
    _write(repo / "shared" / "local.bin", 9)        # ignored, but shared/ travels whole
    nested = repo / "vendor"                        # a nested repository travels without its files
    nested.mkdir()
    _git(nested, "init", "-q")
    _write(nested / "big.bin", 5000)
    _git(nested, "add", "-A")
    _git(nested, "commit", "-qm", "n")
    os.symlink("/usr/bin/env", repo / "link")       # a link travels as a link (12 bytes: its target's path)
    _write(repo / "bundle" / "b.tar.xz", 300)
    _write(repo / "bundle" / "deep" / "m.json", 20)

    sizes = travel.measure(repo, carry=(repo / "bundle",))
    assert sizes["tracked"] == len(ignore) + 100 + 30 + 40
    assert sizes["untracked"] == 5 + len("/usr/bin/env")
    assert sizes["shared"] == 9                     # shared/tracked.bin is counted once, as tracked
    assert sizes["carried"] == 320
    assert sizes["total"] == len(ignore) + 100 + 30 + 40 + 5 + 12 + 9 + 320
    assert sizes["headroom"] == travel.LIMIT_BYTES - sizes["total"]
    assert travel.measure(repo, carry=(repo / "bundle",), carry_bytes=7)["carried"] == 7


def test_the_limits():
    assert travel.DEVICE_LIMIT_BYTES == 64 * 2**20 and travel.LIMIT_BYTES == 56 * 2**20
