"""What the client, the server process and the scheduler share (no SGLang import, no runtime/serve/lang import).

  request.py   the per-request ``esamp`` value: parsed and validated once (``ESampRequest.parse``), carried in
               ``custom_params``, stamped with its distiller group at the tokenizer, read back in the scheduler
  stats.py     how ``/esamp/stats`` combines the counters of several schedulers (each counter declares it)
  handoff.py   the server's ``ESampConfig`` handed from the launching process to SGLang's children
``serve/`` (server process), ``runtime/`` (scheduler) and ``lang/`` (client) import this package, never each other.
"""
