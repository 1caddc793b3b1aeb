"""The user-facing benchmark CLIs, as SGLang ships ``bench_serving``: ``python -m sglang_esamp.bench.throughput``
(the cost), ``.quality`` (what it buys), ``.soak`` (mixed traffic, no leaks)."""
