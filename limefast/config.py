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

# Threads a CPU kernel call may use (the caller included); 0 means Numba's thread count
# (NUMBA_NUM_THREADS, all cores by default). Results do not depend on it.
CPU_THREADS: int = 0

# Rows of a chunk are shared between threads in blocks of about this many bytes.
TASK_BYTES: int = 512 * 1024

# batch_size="auto" (``sampling.BatchSizer``): the first batch, the largest (in images and in
# bytes of perturbed images), and the fall in time per image a doubling must bring to be kept.
AUTO_BATCH_START: int = 16
AUTO_BATCH_MAX: int = 1024
AUTO_BATCH_BYTES: int = 64 * 1024 * 1024
AUTO_BATCH_GAIN: float = 0.10

# num_samples="auto" (``limefast.core.adaptive`` states the rule): the rows of the first round,
# the most rows (lime's default num_samples: "auto" never costs more than lime unless asked), how
# much each later round adds (a fraction of the rows so far, at least AUTO_ROUND_MIN), the
# expected overlap of the shown top superpixels with the converged ones at which it stops
# (AUTO_TARGET_OVERLAP), and the least projected gain of that figure per 1000 more rows worth
# the rows (AUTO_MIN_GAIN; only once the figure is at least AUTO_GAIN_FLOOR), projected to
# AUTO_HORIZONS times the rows so far and to the cap. AUTO_TARGET_OVERLAP, AUTO_MIN_GAIN and
# AUTO_SPREAD (the factor on the standard errors that calibrates the stated overlap) were chosen
# on the tuning half of the sampling study (python -m limefast.benchsuite.study --tune); its
# held-out half checks them.
AUTO_MIN_SAMPLES: int = 150
AUTO_MAX_SAMPLES: int = 1000
AUTO_ROUND_MIN: int = 25
AUTO_GROWTH: float = 0.0
AUTO_TARGET_OVERLAP: float = 0.97
AUTO_MIN_GAIN: float = 0.04
AUTO_GAIN_FLOOR: float = 0.75
AUTO_HORIZONS: tuple = (1.5, 2.0)
AUTO_SPREAD: float = 1.0
# The row design of num_samples="auto" when sampler= does not say (``sampling.SAMPLERS``); a
# fixed num_samples keeps lime's rows. Chosen on the tuning half of the sampling study.
AUTO_SAMPLER: str = "paired"
# AUTO_SAMPLER, AUTO_TARGET_OVERLAP and AUTO_MIN_GAIN are the defaults with lime's default fill
# (hide_color=None: each hidden superpixel takes its mean colour). With a constant hide_color
# the model's answer is far less linear in the superpixels, and the tuning half chose these
# instead (``rounds.auto_defaults``):
AUTO_CONSTANT_FILL: dict = {"sampler": "lime", "target_overlap": 0.92, "min_gain": 0.0}
# The stated overlap's normal draws: how many, and their seed (fixed, so that an explanation's
# figure depends on its rows alone).
AUTO_DRAWS: int = 256
AUTO_DRAW_SEED: int = 0
# Beyond this many superpixels the stated overlap draws each weight from its own standard error
# instead of the joint covariance (whose square root costs F^3).
AUTO_JOINT_MAX_FEATURES: int = 400
# Outputs whose spread over the first round is at most this fraction of their size (at least 1)
# are flat: the model's answer does not depend on the superpixels.
AUTO_FLAT_TOLERANCE: float = 1e-6
# KernelSHAP's "auto" evaluates at most its fixed default budget unless max_samples says more;
# its rule's defaults are its own (its coalitions are its own design, drawn in pairs by size).
SHAP_AUTO_MAX_SAMPLES: int = 2048
# (rounds of single rows: "lime"'s unit).
SHAP_AUTO_DEFAULTS: dict = {"sampler": "lime", "target_overlap": 0.95, "min_gain": 0.05}
# The ranking a reader looks at when num_features does not say: get_image_and_mask's default.
AUTO_STABLE_FEATURES: int = 5
# Under a time_budget, the first round's rows (before the model's speed is known) and the
# share of the budget the rounds plan to use (the rest is kept for the final fit and noise).
BUDGET_FIRST_ROUND: int = 20
BUDGET_SHARE: float = 0.9

# The once-per-explainer hint (``lime_image.PerformanceHint``): given when an explanation took
# at least HINT_MIN_SECONDS, HINT_MODEL_SHARE of it inside classifier_fn, in batches of at most
# HINT_SMALL_BATCH images.
HINT_MIN_SECONDS: float = 1.0
HINT_MODEL_SHARE: float = 0.8
HINT_SMALL_BATCH: int = 32

# CUDA launch configuration.
CUDA_THREADS_PER_BLOCK: int = 256

# -- Device path (limefast.TorchClassifier) ---------------------------------------------------
# CUDA grids put samples on the y axis: at most this many blocks there (the hardware limit).
CUDA_MAX_GRID_Y: int = 65535

# Model batch of a TorchClassifier on the CPU when batch_size=None: as many images as fit in
# TORCH_CPU_INPUT_BYTES of float32 input (8 at 224x224 RGB), at most TORCH_CPU_MAX_BATCH. A
# CNN's widest activation is about 5x its input, so the batch's activations stay under glibc's
# 32 MiB mmap ceiling: larger ones are mapped afresh and page-faulted on every forward (at batch
# 16 a ResNet-18 forward took 1600 page faults per image and ran 7-10% slower, ResNet-50 30%).
TORCH_CPU_INPUT_BYTES: int = 5 << 20
TORCH_CPU_MAX_BATCH: int = 64

# compile='trace' keeps the frozen traces of this many input shapes (the least recently used
# goes): each holds its own copy of the weights with the batch norms folded in.
TORCH_MAX_TRACES: int = 4

# On CUDA, batch_size=None takes the largest batch whose input, times this factor for the
# activations (generous for ResNet-like models at inference), fits in DEVICE_MEMORY_FRACTION of
# the free device memory, capped at TORCH_MAX_DEVICE_BATCH.
TORCH_ACTIVATION_FACTOR: int = 64
DEVICE_MEMORY_FRACTION: float = 0.5
TORCH_MAX_DEVICE_BATCH: int = 256

# The first explanation of a process, while the background load (limefast._preload) has not yet
# loaded Numba and the kernels: stages this small run in NumPy (the same values) rather than
# wait for it. Pixels of an image (quickshift, segment means) and bytes of perturbed images
# written at once; larger work waits for the kernels, which are faster on it.
FIRST_CALL_NUMPY_PIXELS: int = 96 * 96
FIRST_CALL_NUMPY_BYTES: int = 16 * 1024 * 1024

# Images per call of a plain classifier function in the apps (limefast explain, compare, serve);
# a TorchClassifier picks its own.
PLAIN_BATCH: int = 50
