"""``EngineBackend(engine)``: run SGLang frontend programs on an in-process ``sgl.Engine`` / ``sglang_esamp.Engine``.

SGLang 0.5.23's frontend only has backends for HTTP servers (``RuntimeEndpoint``, ``Runtime``) and hosted APIs. An
``sgl.Engine`` is not a frontend backend: ``sgl.set_default_backend(engine)`` fails as soon as a program starts
(the interpreter asks the backend for ``get_chat_template()``). Use
``sgl.set_default_backend(EngineBackend(engine))`` or ``prog.run(..., backend=EngineBackend(engine))``.

Concurrency: the frontend runs every program, and every fork branch, on its own worker thread, but
``Engine.generate`` drives the engine's asyncio loop with ``run_until_complete``, which two threads cannot do at
once. So the backend runs the engine's loop on one driver thread for as long as at least one frontend request is in
flight, and hands each request to it as a coroutine (``asyncio.run_coroutine_threadsafe``): fork branches and
``run_batch`` programs are in the engine at the same time and decode in the same batches, as on the server (and
the branches of a fork share their ESamp group). When the last request finishes the loop is stopped again, so the
engine's own blocking API (``engine.generate``, ``engine.shutdown``) works between programs -- not during one.

Requests are built from ``SglSamplingParams.to_srt_kwargs()`` like RuntimeEndpoint's /generate body, so ``esamp``
(params.py) and the fork group (forks.py) reach the engine's tokenizer hook the same way; responses are the
engine's ``{"text", "meta_info"}``, so ``s.get_meta_info(name)["esamp"]`` reads as with the server.
Supported: gen (also ``stream=True`` runs, ``dtype``/``regex`` constraints, logprob options except
``return_text_in_logprobs``, which the Engine API lacks), fork prefix caching, ``cache_prefix``.
Not supported: ``select`` / ``gen(choices=...)``, images.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Optional

from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template, get_chat_template_by_model_path
from sglang.lang.global_config import global_config

_LOGPROB_OPTIONS = ("return_logprob", "logprob_start_len", "top_logprobs_num")


class _LoopDriver:
    """Runs ``loop`` on a daemon thread while ``active()`` is held by anyone; ``call`` awaits a coroutine on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._users = 0
        self._thread: Optional[threading.Thread] = None

    @contextmanager
    def active(self):
        with self._lock:
            if self._users == 0:
                if self.loop.is_running():
                    raise RuntimeError("the engine's event loop is already running elsewhere; EngineBackend needs "
                                       "it idle (don't call the engine's blocking API while a program runs)")
                self._thread = threading.Thread(target=self.loop.run_forever, name="esamp-engine-loop",
                                                daemon=True)
                self._thread.start()
            self._users += 1
        try:
            yield self
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self.loop.call_soon_threadsafe(self.loop.stop)
                    self._thread.join()
                    self._thread = None

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


async def _next(agen):
    return await agen.__anext__()


class EngineBackend(BaseBackend):
    def __init__(self, engine, chat_template_name: Optional[str] = None):
        super().__init__()
        self.engine = engine
        self.model_path = engine.tokenizer_manager.model_path
        self.chat_template = (get_chat_template(chat_template_name) if chat_template_name
                              else get_chat_template_by_model_path(self.model_path))
        self._driver = _LoopDriver(engine.loop)

    # dtype -> regex + stop strings, exactly as for the HTTP server (a method that only touches the params)
    _handle_dtype_to_regex = RuntimeEndpoint._handle_dtype_to_regex

    def get_model_name(self):
        return self.model_path

    def get_server_info(self):
        return self.engine.get_server_info()

    def flush_cache(self):
        return self.engine.flush_cache()

    def _request(self, s, sampling_params):
        if s.images_:
            raise NotImplementedError("EngineBackend does not send images; use RuntimeEndpoint")
        self._handle_dtype_to_regex(sampling_params)
        params = {
            "skip_special_tokens": global_config.skip_special_tokens_in_output,
            "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
            **sampling_params.to_srt_kwargs(),
        }
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        extra = {k: getattr(sampling_params, k) for k in _LOGPROB_OPTIONS if getattr(sampling_params, k) is not None}
        return params, extra

    def _prefill_only(self, text: str):
        with self._driver.active() as d:
            d.call(self.engine.async_generate(text, {"max_new_tokens": 0}))

    def cache_prefix(self, prefix_str: str):
        self._prefill_only(prefix_str)

    def commit_lazy_operations(self, s):
        self._prefill_only(s.text_)

    def generate(self, s, sampling_params):
        params, extra = self._request(s, sampling_params)
        with self._driver.active() as d:
            out = d.call(self.engine.async_generate(s.text_, params, **extra))
        if isinstance(out, list):   # n > 1
            return [o["text"] for o in out], [o["meta_info"] for o in out]
        return out["text"], out["meta_info"]

    def generate_stream(self, s, sampling_params):
        params, extra = self._request(s, sampling_params)
        with self._driver.active() as d:
            chunks = d.call(self.engine.async_generate(s.text_, params, stream=True, **extra))
            sent = 0
            while True:
                try:
                    chunk = d.call(_next(chunks))
                except StopAsyncIteration:
                    break
                text = chunk["text"]
                yield text[sent:], chunk["meta_info"]
                sent = len(text)

    def select(self, s, choices, temperature, choices_method=None):
        raise NotImplementedError("EngineBackend does not implement select / gen(choices=...); use "
                                  "sgl.RuntimeEndpoint for programs that select")
