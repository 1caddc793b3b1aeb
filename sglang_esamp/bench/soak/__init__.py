"""``python -m sglang_esamp.bench.soak``: mixed traffic against one ESamp server, to prove that it survives real
traffic and gives every distiller slot back (docs/reliability.md).

The harness either talks to a running server (``--base-url``, loopback only) or starts its own
(``--model NAME``, via ``serve.local_server``; ``--faults SPEC`` -> ``--esamp-debug-faults SPEC``, ``--retract`` ->
env ``SGLANG_TEST_RETRACT=1``). It probes the server (session protocol, bank and session limits, fault spec),
draws a seeded plan of request *units* (``mix``), runs them with ``--concurrency`` async workers (``runner``),
then waits for the bank to settle and compares ``/esamp/stats`` before and after (``report``).

Modules:
  ``mix``     the traffic kinds: what each request sends and which status (and, for 400s, which field) it expects
  ``runner``  httpx / ``openai`` client calls, streaming and mid-stream disconnects, session chains
  ``report``  stats deltas, the settle poll, verdict (``failures``), printed table and JSON
  ``cli``     the command line; exit code 0 only when nothing unexpected happened
"""
