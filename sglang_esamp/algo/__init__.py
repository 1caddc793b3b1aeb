"""ESamp's algorithm core in plain torch (no SGLang import anywhere in this package)."""
from .distiller.bank import DistillerBank, TrainResult
from .update.slot_optimizer import OptimizerSpec
from .config import ESampConfig, ESampParamError
from .core import ESampCore
from .counters import ESampCounters
from .rule.sampling import SampleOutput, esamp_sample

__all__ = ["DistillerBank", "OptimizerSpec", "TrainResult", "ESampConfig", "ESampParamError",
           "ESampCore", "ESampCounters", "SampleOutput", "esamp_sample"]
