"""ESamp's algorithm core in plain torch (no SGLang import anywhere in this package), grouped by concept:
``distiller/``, ``rule/``, ``update/``, ``reference/``; ``core.ESampCore`` ties them together. Import each name from the
module that defines it (no re-exports)."""
