"""What one device call carries, counted the way the device tool copies it (issue #45).

The tool copies the working tree's tracked files, the untracked files git does not ignore, a ``shared/`` folder
inside the checkout when there is one, and the ignored paths a call names in ``carry`` (here: ``gpu_bundle/``).
Counted exactly that way:

* tracked files at their working-tree size (what is copied, not the committed blob); a tracked file deleted from
  the tree counts 0;
* a submodule or a nested git repository (a directory in git's listing) counts 0: it travels without its files;
* a symbolic link counts its own size: it travels as a link, not as what it points to;
* every file once, whichever listings name it (a tracked file inside ``shared/`` is not counted twice).

``LIMIT_BYTES`` is this project's bound, 8 MiB under the tool's 64: room for the next committed results before a
lease's command stops travelling. Standard library only (it runs on the device's bare Python too).
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

DEVICE_LIMIT_BYTES = 64 * 2**20   # the device tool refuses a call above this
LIMIT_BYTES = 56 * 2**20          # this project's bound (CI's check): 8 MiB of margin


def git_paths(root: Path, *args: str) -> List[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, capture_output=True, check=True).stdout
    return [p.rstrip("/") for p in out.decode().split("\0") if p]


def file_bytes(path: Path) -> int:
    """The bytes one listed path adds to a call: a file or a link its own size, a directory (a submodule or a
    nested repository, which travel without their files) or a missing path nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return 0 if stat.S_ISDIR(st.st_mode) else st.st_size


def files_under(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):   # os.walk does not follow linked folders: links travel
        base = Path(dirpath)                                # as links
        out += [base / n for n in filenames]
        out += [base / n for n in dirnames if (base / n).is_symlink()]
    return out


def measure(root: Path, carry: Sequence[Path] = (), carry_bytes: Optional[int] = None) -> Dict[str, int]:
    """Bytes per part (tracked, untracked, shared, carried), the total, the limit and the headroom. ``carry_bytes``
    stands in for the carried folders' size when they are not built on this machine."""
    root = Path(root).resolve()
    seen = set()

    def count(paths: Iterable[Path]) -> int:
        total = 0
        for p in paths:
            key = os.path.normpath(str(p))
            if key not in seen:
                seen.add(key)
                total += file_bytes(p)
        return total

    sizes = {"tracked": count(root / p for p in git_paths(root)),
             "untracked": count(root / p for p in git_paths(root, "--others", "--exclude-standard")),
             "shared": count(files_under(root / "shared"))}
    if carry_bytes is None:
        sizes["carried"] = sum(count(files_under(Path(c))) for c in carry)
    else:
        sizes["carried"] = carry_bytes
    sizes["total"] = sum(sizes.values())
    sizes["limit"] = LIMIT_BYTES
    sizes["headroom"] = LIMIT_BYTES - sizes["total"]
    return sizes


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"
