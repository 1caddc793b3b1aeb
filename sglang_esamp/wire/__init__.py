"""What the client, the server process and the scheduler share (no SGLang import, no runtime/serve/lang import).

  request.py    the per-request ``esamp`` value: parsed and validated once (``ESampRequest.parse``), carried in
                ``custom_params``, stamped with its distiller group at the tokenizer, read back in the scheduler
  identity.py   client identity: server-issued session ids and group namespaces, so one client cannot reach
                another's distiller
  placement.py  which DP rank a group or session lives on (a hash of its routing key)
  modes.py      server modes ESamp cannot serve, refused at startup naming the flag
  stats.py      how ``/esamp/stats`` combines the counters of several schedulers (each counter declares it)
  handoff.py    the server's ``ESampConfig`` handed from the launching process to SGLang's children
  hookspec.py   ``@hook(path, kind, params, why)``: a hook body declares the SGLang function it hooks
``serve/`` (server process), ``runtime/`` (scheduler) and ``lang/`` (client) import this package, never each other.
"""
