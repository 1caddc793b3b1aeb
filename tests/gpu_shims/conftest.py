"""The CUDA stand-in lives with the GPU tooling (benchmarks/gpu/shims), outside the wheel: put it on the path."""
import sys
from pathlib import Path

SHIMS = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "shims"
if str(SHIMS) not in sys.path:
    sys.path.insert(0, str(SHIMS))
