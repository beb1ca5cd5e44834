"""Compiled kernels of limefast, installed as ``limefast.kernels``.

One kernel family per module. Each has a private Numba kernel (``_name_cpu``, ``_name_cuda``) and a
host function that prepares arrays and launches it; the public, validating entry points live in
``limefast``.
"""
