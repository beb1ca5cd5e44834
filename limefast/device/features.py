"""What this CPU computes natively: the one place the device path reads the processor's features.

Autocast runs bfloat16 and float16 on any x86 CPU, but only some compute them: oneDNN uses
AVX512_BF16 or AMX-BF16 units for bfloat16 (AVX512_FP16 or AMX-FP16 for float16); without them
it converts every operand to float32 and back, and the half-precision forward is slower than the
float32 one (benchmarks/README.md has the figures). The features come from the kernel's
``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM) and from
``torch.backends.cpu.get_cpu_capability()`` (the widest vector ISA torch's own kernels use).
Where ``/proc/cpuinfo`` cannot be read (macOS, Windows) the flags are unknown and nothing is
claimed about them: no warning is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

# Flags that make a precision native on the CPU: x86 names, then ARM's (Linux ``Features``).
NATIVE_FLAGS = {
    "bf16": ("amx_bf16", "avx512_bf16", "bf16"),
    "fp16": ("amx_fp16", "avx512_fp16", "asimdhp"),
}
# What emulation was measured to cost (benchmarks/bench_precision.py, 2-core AVX2 AMD EPYC,
# ResNet-18 224x224): quoted by the warning so a user sees the size of it.
EMULATED_MEASURED = {
    "bf16": "ResNet-18's forward took 4.3-5.3x its fp32 time",
    "fp16": "ResNet-18's forward took 2.2-5.1x its fp32 time",
}
# The flags a report names (whether present or not), so a reader sees what a figure ran on.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                  "avx512_fp16", "amx_fp16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """The processor's features as the device path sees them.

    Attributes:
        capability: ``torch.backends.cpu.get_cpu_capability()`` ('AVX2', 'AVX512', 'DEFAULT',
            ...), or 'unknown' without torch.
        flags: the CPU flags of ``/proc/cpuinfo``, or None where it cannot be read.
    """

    capability: str
    flags: frozenset | None

    def native(self, precision: str) -> bool | None:
        """Whether the CPU computes ``precision`` natively; None when the flags are unknown.
        fp32 always is; int8 needs AVX2 (fbgemm's and oneDNN's int8 kernels)."""
        if precision == "fp32":
            return True
        if self.flags is None:
            return None
        if precision == "int8":
            return "avx2" in self.flags or "asimd" in self.flags
        return any(flag in self.flags for flag in NATIVE_FLAGS.get(precision, ()))

    def describe(self) -> str:
        """One line for reports and messages, e.g. 'AVX2 (avx2, fma; no avx512_bf16, amx_bf16)'."""
        if self.flags is None:
            return f"{self.capability} (CPU flags unknown)"
        has = [f for f in REPORTED_FLAGS if f in self.flags]
        lacks = [f for f in ("avx512_bf16", "amx_bf16") if f not in self.flags]
        parts = ", ".join(has) or "none of " + ", ".join(REPORTED_FLAGS[:3])
        return f"{self.capability} ({parts}" + (f"; no {', '.join(lacks)})" if lacks else ")")

    def as_dict(self) -> dict:
        """What a benchmark's machine record keeps."""
        return {"capability": self.capability,
                "flags": None if self.flags is None else
                sorted(f for f in REPORTED_FLAGS if f in self.flags),
                "native": {p: self.native(p) for p in ("bf16", "fp16", "int8")},
                "described": self.describe()}


def _read_flags(path: str = "/proc/cpuinfo") -> frozenset | None:
    """The first processor's flags (x86 ``flags``, ARM ``Features``), or None if unreadable."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This CPU's features (read once per process)."""
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # no torch, or a torch without the query: the flags still say enough
        capability = "unknown"
    return CpuFeatures(capability, _read_flags())



def fastest_cpu_precision(features: CpuFeatures | None = None) -> str:
    """The precision the benchmarks run on this CPU: bf16 where it is native (AVX512_BF16 or
    AMX-BF16), else fp32 (emulated bf16 is slower than fp32)."""
    features = cpu_features() if features is None else features
    return "bf16" if features.native("bf16") else "fp32"
