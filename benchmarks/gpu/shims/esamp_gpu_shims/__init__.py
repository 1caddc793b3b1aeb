"""The ESamp CUDA stand-in: lets stock SGLang 0.5.23 serve a Llama/Qwen2 text model on a CUDA machine that has
torch and Triton but not the ``sgl-kernel`` wheel (373 MB, too large to carry to the lent GPU machine), without
building SGLang's JIT kernels with nvcc at their first call (slow; impossible where the image has no CUDA toolkit).
Opt-in (``SGLANG_ESAMP_CUDA_STANDIN=1``); never shadows a real
``sgl_kernel``; does nothing on the CPU machines (``SGLANG_USE_CPU_ENGINE=1`` keeps ``cpu_shims``' stub).

* ``finder.py`` -- the import hooks and the rules for when they act (standard library only);
* ``ops.py``    -- the ops, in torch, with the signatures and in-place semantics of what they replace.

Importing ``finder`` installs the hooks; on the GPU machine a ``.pth`` line written by the bundle install does it
in every process (a plugin would load too late: SGLang's spawned scheduler imports ``sgl_kernel`` first).

The sibling of ``cpu_shims`` (same pattern: a meta-path finder serving a stub only where no real module exists);
a separate package because the two act on disjoint machines and serve different names.
"""
