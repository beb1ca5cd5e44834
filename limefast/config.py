"""Tunables of limefast, in one place.

Tests patch these small (``monkeypatch.setattr(limefast.config, "CHUNK_BYTES", ...)``) so that tiny
inputs still cross chunk and block boundaries. Every reader looks them up at call time, so a patch
takes effect without reloading anything.
"""

# Perturbed images are written chunk by chunk into one reused buffer of at most this many bytes
# (but always at least one classifier batch). A chunk of a few MiB stays in the cache between
# the kernel that writes it and the classifier that reads it.
CHUNK_BYTES: int = 8 * 1024 * 1024

# Upper bound on the bytes of perturbed images held at once when a single classifier batch is
# larger than CHUNK_BYTES: beyond it the explainer refuses with a MemoryError that says so,
# instead of exhausting memory.
MEMORY_BUDGET_BYTES: int = 2 * 1024**3

# The 0/1 rows are drawn this many values at a time (int64 per value while drawing) and kept
# as int8; the surrogate builds its Gram matrix over row blocks of at most this many values.
ROW_DRAW_ELEMENTS: int = 1 << 20

# CUDA launch configuration.
CUDA_THREADS_PER_BLOCK: int = 256
