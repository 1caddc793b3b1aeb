"""ESamp's algorithm core in plain torch (no SGLang import anywhere in this package)."""
from .bank import DistillerBank, OptimizerSpec, TrainResult
from .config import ESampConfig, ESampParamError
from .core import ESampCore
from .counters import ESampCounters
from .sampling import SampleOutput, esamp_sample

__all__ = ["DistillerBank", "OptimizerSpec", "TrainResult", "ESampConfig", "ESampParamError",
           "ESampCore", "ESampCounters", "SampleOutput", "esamp_sample"]
