"""SGLang plugin entry point (group ``sglang.srt.plugins``): SGLang calls ``register()`` early in every one of
its processes (server/engine, scheduler before the model runner is built, detokenizer, DP controller).

``SGLANG_ESAMP=0`` leaves SGLang untouched. With ``SGLANG_ESAMP_TRACE_DIR`` set, each process that registers
writes a line there (pid, process name) -- tests use it to prove the plugin reached the scheduler.
"""
import os


def register():
    if os.environ.get("SGLANG_ESAMP", "1") == "0":
        return
    trace_dir = os.environ.get("SGLANG_ESAMP_TRACE_DIR")
    if trace_dir:
        import multiprocessing

        os.makedirs(trace_dir, exist_ok=True)
        with open(os.path.join(trace_dir, f"plugin-{os.getpid()}.txt"), "w") as f:
            f.write(f"{os.getpid()} {multiprocessing.current_process().name}\n")
    from .hooks import install

    install()
