"""SGLang plugin entry point (group ``sglang.srt.plugins``): SGLang calls ``register()`` early in every one of
its processes (server/engine, scheduler before the model runner is built, detokenizer, DP controller).

``SGLANG_ESAMP=0`` leaves SGLang untouched. With ``SGLANG_ESAMP_TRACE_DIR`` set, each process that registers
writes a line there (pid, process name) -- tests use it to prove the plugin reached the scheduler.

In SGLang's child processes, tqdm gets a thread lock: its default lock is a named semaphore, registered with the
parent's resource tracker, and SGLang ends its children with SIGKILL, so every child's semaphore was left in
/dev/shm (or, with the tracker alive, reported as leaked at the caller's exit).
"""
import multiprocessing
import os


def register():
    if os.environ.get("SGLANG_ESAMP", "1") == "0":
        return
    trace_dir = os.environ.get("SGLANG_ESAMP_TRACE_DIR")
    if trace_dir:
        os.makedirs(trace_dir, exist_ok=True)
        with open(os.path.join(trace_dir, f"plugin-{os.getpid()}.txt"), "w") as f:
            f.write(f"{os.getpid()} {multiprocessing.current_process().name}\n")
    if multiprocessing.parent_process() is not None:     # one of SGLang's child processes
        import threading

        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    from .hooks import install

    install()
