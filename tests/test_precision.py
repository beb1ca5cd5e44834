"""Precisions against what the device computes: the CPU's features read in one place, a warning
once for a half precision the CPU only emulates, a ValueError naming what a device can run."""

from __future__ import annotations

import contextlib
import types
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the device path needs torch: limefast[torch]")

from limefast import TorchClassifier  # noqa: E402
from limefast.core.rounds import PerformanceHint  # noqa: E402
from limefast.device import features, options  # noqa: E402
from limefast.device.features import CpuFeatures  # noqa: E402

AVX2 = CpuFeatures("AVX2", frozenset({"fpu", "avx", "avx2", "fma"}))
AVX512_BF16 = CpuFeatures("AVX512", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX = CpuFeatures("AVX512", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                       "amx_fp16", "avx512_fp16"}))
UNKNOWN = CpuFeatures("DEFAULT", None)


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on the CPU given to the returned setter; the warned set starts empty."""
    monkeypatch.setattr(options, "_WARNED", set())

    def use(found: CpuFeatures):
        monkeypatch.setattr(features, "cpu_features", lambda: found)

    return use


def build(precision):
    return TorchClassifier(tiny_model(), precision=precision, device="cpu")


# -- the features, read once -------------------------------------------------------------------

def test_flags_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma "
                   "avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp bf16\n")
    assert features._read_flags(str(x86)) == {"fpu", "avx2", "fma", "avx512_bf16"}  # the first
    assert features._read_flags(str(arm)) == {"fp", "asimd", "asimdhp", "bf16"}
    assert features._read_flags(str(tmp_path / "missing")) is None
    assert CpuFeatures("unknown", features._read_flags(str(arm))).native("bf16") is True


@pytest.mark.parametrize("found,bf16,fp16,fastest", [
    (AVX2, False, False, "fp32"),
    (AVX512_BF16, True, False, "bf16"),
    (AMX, True, True, "bf16"),
    (UNKNOWN, None, None, "fp32"),
])
def test_native_precisions(found, bf16, fp16, fastest):
    assert found.native("fp32") is True
    assert (found.native("bf16"), found.native("fp16")) == (bf16, fp16)
    assert features.fastest_cpu_precision(found) == fastest
    record = found.as_dict()
    assert record["native"]["bf16"] == bf16 and record["capability"] == found.capability


def test_description_names_what_is_missing():
    assert AVX2.describe() == "AVX2 (avx2, fma; no avx512_bf16, amx_bf16)"
    assert AMX.describe().endswith(")") and "no " not in AMX.describe()
    assert "unknown" in UNKNOWN.describe()


def test_this_machine_is_read_and_recorded():
    from limefast.benchsuite import machine

    found = features.cpu_features()
    assert found is features.cpu_features()  # read once
    assert found.capability == str(torch.backends.cpu.get_cpu_capability())
    assert machine()["cpu_features"] == found.as_dict()


# -- an emulated half precision: a warning, once -----------------------------------------------

@pytest.mark.parametrize("precision,units", [("bf16", "AVX512_BF16 or AMX-BF16"),
                                             ("fp16", "AVX512_FP16 or AMX-FP16")])
def test_emulated_half_precision_warns_once_and_runs(cpu, precision, units):
    cpu(AVX2)
    with pytest.warns(PerformanceHint, match=f"precision='{precision}' on a CPU without "
                      f"{units}") as caught:
        clf = build(precision)
    message = str(caught[0].message)
    assert "emulates" in message and "slower than in fp32" in message
    assert "measured on" in message and "precision='fp32'" in message
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = build(precision)  # once per process
    assert clf.precision == again.precision == precision
    image = np.random.RandomState(0).randint(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    probs = clf(image)
    with torch.inference_mode():
        assert clf.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("found", [AVX512_BF16, AMX, UNKNOWN])
def test_no_warning_where_bf16_is_native_or_unknown(cpu, found):
    cpu(found)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build("bf16").precision == "bf16"
        assert build("fp32").precision == "fp32"
        assert build("auto").precision == "fp32"


def test_fp16_warns_apart_from_bf16(cpu):
    cpu(AVX512_BF16)  # bf16 native, fp16 not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("bf16")
    with pytest.warns(PerformanceHint, match="precision='fp16'"):
        build("fp16")


# -- a precision the device cannot run: ValueError naming those it can -------------------------

@pytest.mark.parametrize("precision", ["fp8", "int4", "float32", 16, None])
def test_precision_the_cpu_cannot_run(cpu, precision):
    cpu(AVX2)
    with pytest.raises(ValueError) as raised:
        build(precision)
    message = str(raised.value)
    assert f"precision={precision!r} cannot run on the CPU (AVX2 (avx2, fma;" in message
    assert "'fp32' (native), 'bf16' (emulated: slower than fp32), 'fp16' (emulated: slower " \
           "than fp32), or 'auto' ('fp32' there)" in message


def fake_cuda(bf16: bool):
    """Just what resolve_precision reads of torch on a GPU."""
    cuda = types.SimpleNamespace(device=lambda device: contextlib.nullcontext(),
                                 is_bf16_supported=lambda: bf16,
                                 get_device_name=lambda device: "Tesla T4")
    return types.SimpleNamespace(cuda=cuda)


def test_bf16_on_a_gpu_without_it_names_what_it_runs():
    gpu = torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"precision='bf16' cannot run on device 'cuda:0' "
                       r"\(Tesla T4\): it runs 'fp32' \(native\), 'fp16' \(native\), or 'auto' "
                       r"\('fp16' there\)"):
        options.resolve_precision(fake_cuda(False), "bf16", gpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert options.resolve_precision(fake_cuda(True), "bf16", gpu) == "bf16"
    assert options.resolve_precision(fake_cuda(False), "auto", gpu) == "fp16"
