"""A ``TorchClassifier``'s arguments checked and resolved before any device work: the
normalisation statistics, the device (CUDA only where PyTorch and numba.cuda both see it), the
precision, the model's own device, and the model's output on its first forward."""

from __future__ import annotations

import warnings

import numpy as np

from limefast.core.rounds import PerformanceHint
from limefast.device import features


def channel_stats(mean, std):
    """(C,) float64 mean and std, one value per channel; std positive."""
    try:
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"mean and std must be sequences of numbers; got {mean!r}, {std!r}"
        ) from exc
    if mean.size == 0 or mean.size != std.size:
        raise ValueError(
            f"mean and std must have one value per channel, the same number; got {mean.size} "
            f"and {std.size}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std <= 0).any():
        raise ValueError(f"mean must be finite and std positive; got mean={mean}, std={std}")
    return mean, std


def resolve_device(torch, device):
    """The torch device for ``device`` (None: CUDA where there is one, else the CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:i'; got {device!r}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:i'; got '{device}'")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device='{device}' was asked for but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}): pass "
            "device='cpu', or run where a GPU and its driver are visible"
        )
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device='{device}' but only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    from numba import cuda as numba_cuda

    if not numba_cuda.is_available():
        raise RuntimeError(
            "the CUDA device path launches Numba CUDA kernels, but numba.cuda finds no usable "
            "driver or toolkit: install numba-cuda and the CUDA runtime "
            "(pip install 'limefast[cuda]'), or pass device='cpu'"
        )
    return torch.device("cuda", index)


HOW = {"native": "native", "emulated": "emulated: slower than fp32",
       "unknown": "CPU flags unknown"}
# Precisions warned about once per process (PerformanceHint): emulated on this CPU.
_WARNED: set = set()


def runnable_precisions(torch, device) -> dict:
    """precision -> how ``device`` runs it: 'native', or 'emulated' (a CPU without the units:
    slower than fp32), or 'unknown' (a CPU whose flags cannot be read). A precision left out
    cannot run there."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            bf16 = torch.cuda.is_bf16_supported()
        return {"fp32": "native", "fp16": "native", **({"bf16": "native"} if bf16 else {})}
    cpu = features.cpu_features()
    out = {"fp32": "native"}
    for precision in ("bf16", "fp16"):
        native = cpu.native(precision)
        out[precision] = "unknown" if native is None else "native" if native else "emulated"
    return out


def resolve_precision(torch, precision, device):
    """``precision`` with ``"auto"`` resolved (fp16 on CUDA, fp32 on the CPU), checked against
    what ``device`` can run (a ``ValueError`` naming those), and a ``PerformanceHint`` once per
    process for a half precision the CPU only emulates."""
    auto = "fp16" if device.type == "cuda" else "fp32"
    if precision == "auto":
        return auto
    runs = runnable_precisions(torch, device)
    if not isinstance(precision, str) or precision not in runs:
        where = (f"device '{device}' ({torch.cuda.get_device_name(device)})"
                 if device.type == "cuda" else
                 f"the CPU ({features.cpu_features().describe()})")
        can = ", ".join(f"'{p}' ({HOW[how]})" for p, how in runs.items())
        raise ValueError(f"precision={precision!r} cannot run on {where}: it runs {can}, or "
                         f"'auto' ('{auto}' there)")
    if device.type == "cpu" and runs[precision] == "emulated" and precision not in _WARNED:
        _WARNED.add(precision)
        warnings.warn(emulated_message(precision), PerformanceHint, stacklevel=3)
    return precision


def emulated_message(precision: str) -> str:
    """Why ``precision`` is slow on this CPU, with what was measured, and what to do."""
    units = {"bf16": "AVX512_BF16 or AMX-BF16", "fp16": "AVX512_FP16 or AMX-FP16"}[precision]
    flags = "|".join(features.NATIVE_FLAGS[precision][:2])
    return (
        f"limefast: precision='{precision}' on a CPU without {units} units "
        f"({features.cpu_features().describe()}): oneDNN emulates it, converting every operand "
        "to float32 and back, so the forward runs slower than in fp32, not faster (measured on "
        f"a 2-core AVX2 AMD EPYC: {features.EMULATED_MEASURED[precision]}; "
        "benchmarks/README.md). Pass precision='fp32' here, or run where "
        f"{units} exists (grep -o -E '{flags}' /proc/cpuinfo)."
    )


def check_model_device(model, device) -> None:
    """The model's parameters and buffers are on ``device``."""
    tensors = list(model.parameters()) + list(model.buffers())
    found = {t.device for t in tensors}
    wrong = sorted(str(d) for d in found if d.type != device.type or (
        device.type == "cuda" and d.index != device.index))
    if wrong:
        raise ValueError(
            f"the model's parameters are on {', '.join(wrong)} but device='{device}' was asked "
            f"for: move the model with model.to('{device}'), or pass device='{wrong[0]}'"
        )


def check_output(torch, out, n) -> None:
    """The forward returned one (n, n_classes) tensor."""
    if not torch.is_tensor(out):
        raise TypeError(
            f"the model returned a {type(out).__name__}; TorchClassifier needs one (N, n_classes) "
            "tensor: wrap the model in an nn.Module whose forward returns it (e.g. out['logits'] "
            "or out[0])"
        )
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(
            f"the model must return (N, n_classes) outputs; got shape {tuple(out.shape)} for "
            f"N={n} images: flatten or select the class scores in a wrapper module"
        )
