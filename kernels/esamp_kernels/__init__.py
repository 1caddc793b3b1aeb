"""Triton kernels for ESamp's hot paths, each beside the plain-torch reference that is the truth in tests.

Installed as ``esamp_kernels`` (never as ``kernels``: SGLang imports the PyPI package of that name).
"""
