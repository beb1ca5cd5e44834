"""The device path: ``TorchClassifier`` and its executor, against lime and the CPU path."""

from __future__ import annotations

import pytest

pytest.importorskip("lime", reason="needs lime, the reference: limefast[test]")
pytest.importorskip("torch", reason="the device path needs torch: limefast[torch]")
pytest.importorskip("hypothesis", reason="property tests need hypothesis: limefast[test]")

import lime.lime_image as lime_ref
import numpy as np
import torch
from agreement import (
    U_FLOAT32,
    U_TF32,
    assert_float32_agreement,
    assert_same_explanation,
    forward_rtol,
    logit_scale,
)
from conftest import bundled
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from limefast import TorchClassifier, config
from limefast import lime_image as lime_fast
from limefast.core.surrogate import WeightedProblem
from limefast.device.surrogate import fit_labels
from limefast.imagenet import MEAN, STD
from limefast.kernels import model_ready, perturb


class TinyCNN(torch.nn.Module):
    """A few convolutions and a linear head, random weights, peaked enough to explain."""

    def __init__(self, n_classes=10, channels=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4))
        self.head = torch.nn.Linear(256, n_classes)
        with torch.no_grad():
            self.head.weight.mul_(30)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def grid_segments(h, w, block=8):
    """(h, w) labels of block x block tiles, numbered 0..n-1 row by row."""
    cols = -(-w // block)
    return (np.arange(h)[:, None] // block) * cols + np.arange(w)[None, :] // block


IMAGE = bundled("astronaut", 48)
SEGMENTS = grid_segments(48, 48)  # 36 features


def segmentation(_image):
    return SEGMENTS


def classifier(model=None, **kwargs):
    """A TorchClassifier of a CPU model, on the CPU unless ``device`` says (a GPU machine's
    default would be CUDA)."""
    kwargs.setdefault("mean", MEAN)
    kwargs.setdefault("std", STD)
    kwargs.setdefault("device", "cpu")
    return TorchClassifier(TinyCNN() if model is None else model, **kwargs)


def explain(clf, image=IMAGE, seed=0, explainer_kwargs=None, **kwargs):
    kwargs.setdefault("segmentation_fn", segmentation)
    kwargs.setdefault("num_samples", 100)
    explainer = lime_fast.LimeImageExplainer(random_state=seed, **(explainer_kwargs or {}))
    return explainer.explain_instance(image, clf, progress_bar=False, **kwargs)


def float32_close(ref, ours, model=None, unit=U_FLOAT32):
    """The float32 contract (``tests/agreement.py``) for explanations of ``model``'s forwards
    (default: the tests' TinyCNN) computed two ways."""
    model = TinyCNN() if model is None else model
    logits = logit_scale(classifier(model), np.stack([ref.image, ref.image // 2]))
    assert_float32_agreement(ref, ours, forward_rtol(model, unit, logits))


# -- the NumPy classifier_fn -----------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype,output", [(np.uint8, "softmax"), (np.float32, "sigmoid"),
                                          (np.uint8, "raw")])
def test_numpy_call_is_the_model_on_normalised_images(channels_last, dtype, output):
    rng = np.random.RandomState(1)
    batch = rng.randint(0, 256, (5, 20, 24, 3)).astype(np.uint8)
    if dtype == np.float32:
        batch = (batch / 255.0).astype(np.float32)
    model = TinyCNN()
    clf = TorchClassifier(model, mean=MEAN, std=STD, output=output, channels_last=channels_last,
                          batch_size=2, device="cpu")
    got = clf(batch)
    assert got.shape == (5, 10) and got.dtype == np.float32
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    if dtype == np.uint8:
        x = x / 255
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        ref = model(x)
    ref = {"softmax": ref.softmax(1), "sigmoid": ref.sigmoid(), "raw": ref}[output].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# -- agreement with lime (the same TorchClassifier as lime's classifier_fn) --------------------

@pytest.mark.parametrize("method,num_features", [
    ("auto", 100000), ("auto", 5), ("none", 10), ("highest_weights", 8),
    ("forward_selection", 3), ("lasso_path", 6),
])
def test_matches_lime_fp32(method, num_features):
    """With lime's batches of 10 as the device path's batches, the model sees the same input
    bits in the same batches both ways: exact. (lime 0.2.0.1 keeps the score and local
    prediction of the last label fitted, the top one.)"""
    clf = classifier(batch_size=10)
    kwargs = dict(num_samples=100, top_labels=3, num_features=num_features,
                  segmentation_fn=segmentation)
    ref = lime_ref.LimeImageExplainer(random_state=4, feature_selection=method).explain_instance(
        IMAGE, clf, **kwargs)
    ours = explain(clf, seed=4, explainer_kwargs={"feature_selection": method}, **kwargs)
    assert_same_explanation(ref, ours, score_label=ref.top_labels[0])


def test_resnet18_matches_lime():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    clf = TorchClassifier(model, mean=MEAN, std=STD, precision="fp32", device="cpu")
    image = bundled("chelsea", 64)
    seg = grid_segments(64, 64, 8)
    kwargs = dict(num_samples=40, top_labels=3, segmentation_fn=lambda im: seg)
    ref = lime_ref.LimeImageExplainer(random_state=1).explain_instance(image, clf, **kwargs)
    ours = explain(clf, image=image, seed=1, **kwargs)
    # lime's calls of 10 against the device path's one batch of 40: other float32 kernels.
    assert_float32_agreement(ref, ours, forward_rtol(model, logits=logit_scale(clf, image[None])))


@pytest.mark.parametrize("batch_size", [10, None])
def test_explicit_labels_and_hide_color(batch_size):
    clf = classifier(batch_size=batch_size)
    kwargs = dict(num_samples=80, top_labels=None, labels=(2, 7), hide_color=0,
                  segmentation_fn=segmentation)
    ref = lime_ref.LimeImageExplainer(random_state=3).explain_instance(IMAGE, clf, **kwargs)
    ours = explain(clf, seed=3, **kwargs)
    if batch_size == 10:  # lime's batches: exact
        assert_same_explanation(ref, ours, score_label=7)
    else:
        float32_close(ref, ours)


# -- the device path against the CPU drop-in path ----------------------------------------------

def cpu_path(clf):
    """``clf`` as a plain function: the CPU executor, which calls it with NumPy batches."""
    return lambda batch: clf(batch)


def recording(clf):
    """Wrap ``clf.forward`` to keep a copy of every model-ready batch it is given."""
    seen = []
    forward = clf.forward

    def record(x):
        seen.append(x.detach().clone().contiguous())
        return forward(x)

    clf.forward = record
    return seen


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_device_path_equals_cpu_path(batch_size):
    """The CPU path in the device path's batches: the model gets bitwise-equal inputs in the
    same batches, so the explanations are equal to the float64 surrogate's rounding."""
    clf = classifier(batch_size=batch_size)
    seen = recording(clf)
    device = explain(clf, num_samples=90)
    seen_device = seen[:]
    seen.clear()
    cpu = explain(cpu_path(clf), num_samples=90, batch_size=clf.batch_for(IMAGE.shape))
    seen_cpu = seen[:]
    assert [x.shape for x in seen_device] == [x.shape for x in seen_cpu] != []
    for a, b in zip(seen_device, seen_cpu):
        assert torch.equal(a, b)
    assert_same_explanation(cpu, device)
    for label in cpu.local_exp:
        assert device.local_pred[label].shape == (1,)
        feature, weight = device.local_exp[label][0]
        assert isinstance(feature, np.int64) and isinstance(weight, np.float64)
        assert isinstance(device.intercept[label], np.float64)
        assert isinstance(device.score[label], float)
    assert {"upload", "model_ready", "forward"} <= set(device.timings)


def test_device_path_in_other_batches_than_the_cpu_path():
    """Batches of 7 against 10: other float32 kernels, the float32 contract."""
    clf = classifier(batch_size=7)
    float32_close(explain(cpu_path(clf), num_samples=90, batch_size=10),
                  explain(clf, num_samples=90))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_images_device_equals_cpu(dtype):
    clf = classifier()
    image = (IMAGE / 255).astype(dtype)
    device = explain(clf, image=image, num_samples=60)
    cpu = explain(cpu_path(clf), image=image, num_samples=60,
                  batch_size=clf.batch_for(IMAGE.shape))
    assert_same_explanation(cpu, device)


def test_host_fallbacks_model_regressor_and_lasso_path():
    clf = classifier()
    batch = clf.batch_for(IMAGE.shape)
    for kwargs, explainer_kwargs in [({"model_regressor": Ridge(alpha=0.5)}, {}),
                                     ({"num_features": 4}, {"feature_selection": "lasso_path"})]:
        device = explain(clf, explainer_kwargs=explainer_kwargs, **kwargs)
        cpu = explain(cpu_path(clf), explainer_kwargs=explainer_kwargs, batch_size=batch,
                      **kwargs)
        assert_same_explanation(cpu, device)


def test_explain_batch_equals_explain_instance_in_turn():
    clf = classifier(batch_size=16)
    images = [bundled("astronaut", 48), bundled("coffee", 48), bundled("chelsea", 40),
              bundled("rocket", 48)]
    segs = {im.shape: grid_segments(*im.shape[:2]) for im in images}
    kwargs = dict(num_samples=30, segmentation_fn=lambda im: segs[im.shape], progress_bar=False)
    batch = lime_fast.LimeImageExplainer(random_state=5).explain_batch(images, clf, **kwargs)
    single = lime_fast.LimeImageExplainer(random_state=5)
    for image, explanation in zip(images, batch):
        # A batch of explain_batch holds rows of several images, so the last batch of each
        # image is another shape than explain_instance's: the float32 contract.
        float32_close(single.explain_instance(image, clf, **kwargs), explanation)


# -- latency -----------------------------------------------------------------------------------

def test_warmup_draws_nothing_and_later_calls_reuse_buffers():
    clf = classifier(batch_size=32)
    explainer = lime_fast.LimeImageExplainer(random_state=0)
    explainer.warmup(IMAGE.shape, clf, num_samples=70, segmentation_fn=segmentation)
    executor = clf.limefast_executor()
    assert executor.warmup(IMAGE.shape, np.uint8, 70) == 32 + 70 % 32
    workspace = executor._workspaces[(IMAGE.shape, np.dtype(np.uint8))]
    buffer = workspace.flat.data_ptr()
    signatures = len(perturb._copy_runs_cpu.signatures)
    first = explainer.explain_instance(IMAGE, clf, num_samples=70, segmentation_fn=segmentation,
                                       progress_bar=False)
    again = explain(clf, num_samples=70)  # a fresh explainer, seed 0: the same draws
    assert first.local_exp == again.local_exp  # the warm-up drew nothing from random_state
    assert workspace.flat.data_ptr() == buffer
    assert len(perturb._copy_runs_cpu.signatures) == signatures
    assert list(executor._workspaces) == [(IMAGE.shape, np.dtype(np.uint8))]


def test_warmup_with_a_plain_classifier_and_grayscale_shape():
    clf = classifier()
    explainer = lime_fast.LimeImageExplainer(random_state=0)
    explainer.warmup((30, 20), lambda batch: clf(batch), num_samples=20)
    explainer.warmup((30, 20), clf, num_samples=20, dtype=np.float32)


# -- options -----------------------------------------------------------------------------------

def test_weights_loaded_from_a_state_dict_file(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(TinyCNN(seed=3).state_dict(), path)
    model = TinyCNN(seed=99)
    model.load_state_dict(torch.load(path, weights_only=True))
    loaded = explain(classifier(model))
    original = explain(classifier(TinyCNN(seed=3)))
    assert loaded.local_exp == original.local_exp
    assert loaded.intercept == original.intercept


def test_pickles_without_its_buffers():
    import pickle

    clf = classifier(compile="script", precision="bf16", batch_size=8)
    a = explain(clf, num_samples=40)
    copy = pickle.loads(pickle.dumps(clf))
    assert (copy.precision, copy.batch_size, copy.compile) == ("bf16", 8, "script")
    assert copy.limefast_executor() is not clf.limefast_executor()
    assert explain(copy, num_samples=40).local_exp == a.local_exp


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_torchscript_gives_the_eager_explanation(mode):
    eager = explain(classifier())
    compiled_clf = classifier(compile=mode)
    compiled = explain(compiled_clf)
    float32_close(eager, compiled)
    assert isinstance(compiled_clf._module if mode == "script" else
                      next(iter(compiled_clf._traced.values())), torch.jit.ScriptModule)


class BatchNormCNN(torch.nn.Module):
    """TinyCNN with batch norms holding non-trivial running statistics."""

    def __init__(self):
        super().__init__()
        tiny = TinyCNN()
        self.conv = tiny.features[0]
        self.bn = torch.nn.BatchNorm2d(8)
        self.rest = tiny.features[1:]
        self.head = tiny.head
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = self.rest(self.bn(self.conv(x)))
        return self.head(torch.flatten(x, 1))


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_torchscript_modes_are_frozen_with_batch_norms_folded(mode):
    eager = explain(classifier(BatchNormCNN()))
    compiled_clf = classifier(BatchNormCNN(), compile=mode)
    compiled = explain(compiled_clf)
    float32_close(eager, compiled, BatchNormCNN())
    module = (compiled_clf._module if mode == "script"
              else next(iter(compiled_clf._traced.values())))
    graph = str(module.graph)
    assert "prim::GetAttr" not in graph  # frozen: the weights are constants
    assert "batch_norm" not in graph  # folded into the convolution


def test_trace_takes_a_float16_batch():
    """CUDA's fp16 path writes float16 batches: the graph is traced in float32 all the same
    (a float16 example would meet the float32 weights) and autocast casts when it runs."""
    clf = classifier(compile="trace")
    x = torch.rand(2, 3, 48, 48).to(torch.float16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        probs = clf.forward(x)
    with torch.inference_mode():
        expected = classifier().forward(x.float())
    torch.testing.assert_close(probs, expected, atol=0.02, rtol=0)


@pytest.mark.parametrize("compile_mode", [None, "trace"])
def test_bf16_runs_and_is_sane(compile_mode):
    batch = np.stack([IMAGE, bundled("coffee", 48)])
    fp32, bf16 = classifier(), classifier(precision="bf16", compile=compile_mode)
    p32, p16 = fp32(batch), bf16(batch)
    assert p16.dtype == np.float32 and np.isfinite(p16).all()
    assert not np.array_equal(p32, p16)  # autocast is on
    np.testing.assert_allclose(p16, p32, atol=0.05)
    a, b = explain(fp32, num_samples=150), explain(bf16, num_samples=150)
    label = a.top_labels[0]
    assert label == b.top_labels[0]
    wa, wb = dict(a.local_exp[label]), dict(b.local_exp[label])
    features = sorted(wa)
    assert spearmanr([wa[f] for f in features], [wb[f] for f in features])[0] > 0.8


@pytest.mark.parametrize("shape,expected", [
    ((224, 224, 3), 8),  # 5 MiB of float32 input: activations under glibc's mmap ceiling
    ((32, 32, 3), 64),  # capped
    ((2048, 2048, 3), 1),  # never 0
])
def test_cpu_batch_follows_the_image_size(shape, expected):
    assert classifier().batch_for(shape) == expected
    assert classifier(batch_size=5).batch_for(shape) == 5


def test_numpy_calls_run_in_equal_chunks_and_traces_are_bounded(monkeypatch):
    from limefast import config

    clf = classifier(compile="trace", batch_size=8)
    shapes = []
    forward = clf.forward
    monkeypatch.setattr(clf, "forward", lambda x: shapes.append(x.shape[0]) or forward(x))
    batch = np.repeat(IMAGE[None], 10, axis=0)
    probs = clf(batch)
    assert shapes == [5, 5]  # lime's 10 images: one traced shape, not 8 and 2
    np.testing.assert_allclose(probs, probs[:1].repeat(10, axis=0), rtol=1e-5)
    assert list(clf._traced) == [(5, 3, 48, 48)]
    monkeypatch.setattr(config, "TORCH_MAX_TRACES", 2)
    for n in (1, 2, 3):
        clf(batch[:n])
    assert list(clf._traced) == [(2, 3, 48, 48), (3, 3, 48, 48)]  # the latest two


def test_channels_first_layout_gives_the_same_explanation():
    a = explain(classifier(channels_last=True))
    b = explain(classifier(channels_last=False))
    float32_close(a, b)


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,match", [
    ({"precision": "fp8"}, ValueError, "precision=.fp8. cannot run on the CPU"),
    ({"compile": "jit"}, ValueError, "compile must be one of"),
    ({"output": "logits"}, ValueError, "output must be one of"),
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ({"mean": (0.5, 0.5), "std": (1, 1, 1)}, ValueError, "one value per channel"),
    ({"std": (1, 0, 1)}, ValueError, "std positive"),
    ({"scale": -1}, ValueError, "scale must be a positive"),
    ({"device": "tpu"}, ValueError, "device must be 'cpu', 'cuda'"),
    ({"device": "cpu", "cuda_graph": True}, ValueError, "cuda_graph=True needs a CUDA device"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        classifier(**kwargs)


def test_not_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchClassifier(lambda x: x)


def test_model_on_another_device_than_asked():
    model = TinyCNN().to("meta")
    with pytest.raises(ValueError, match=r"model.to\('cpu'\)"):
        TorchClassifier(model, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu():
    with pytest.raises(RuntimeError, match="no CUDA GPU.*device='cpu'"):
        classifier(device="cuda")


def test_cuda_without_numba_cuda(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"numba-cuda.*limefast\[cuda\]"):
        TorchClassifier(TinyCNN().to("meta"), device="cuda")


class _Spatial(torch.nn.Module):
    def forward(self, x):
        return x[:, :2]


class _Pair(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x


@pytest.mark.parametrize("model,error,match", [
    (_Spatial(), ValueError, r"\(N, n_classes\) outputs; got shape \(\d+, 2, 48, 48\)"),
    (_Pair(), TypeError, "returned a tuple"),
])
def test_model_output_not_n_by_classes(model, error, match):
    clf = TorchClassifier(model, device="cpu")
    with pytest.raises(error, match=match):
        explain(clf, num_samples=10)
    with pytest.raises(error, match=match):
        clf(IMAGE[None])


def test_image_channels_do_not_match_mean_std():
    clf = classifier()
    rgba = np.dstack([IMAGE, IMAGE[..., :1]])
    with pytest.raises(ValueError, match="4 channels but the TorchClassifier's mean/std have 3"):
        explain(clf, image=rgba)
    with pytest.raises(ValueError, match="4 channels"):
        clf(rgba[None])
    gray = TorchClassifier(TinyCNN(channels=1), mean=(0.5,), std=(0.25,), device="cpu")
    with pytest.raises(ValueError, match="3 channels.*gray2rgb"):
        explain(gray, image=IMAGE[..., 0])


def test_image_dtype_without_default_scale():
    with pytest.raises(ValueError, match="pass TorchClassifier\\(..., scale=...\\)"):
        explain(classifier(), image=IMAGE.astype(np.int32))
    explain(classifier(scale=1 / 255), image=IMAGE.astype(np.int32), num_samples=10)


# -- the pieces: surrogate and model-ready kernels ---------------------------------------------

@pytest.mark.parametrize("method,num_features,unit", [
    ("none", 10, 1), ("highest_weights", 8, 1), ("forward_selection", 4, 1), ("auto", 5, 1),
    ("auto", 1000, 1), ("none", 10, 2), ("auto", 5, 2),
])
def test_device_surrogate_matches_weighted_problem(method, num_features, unit):
    rng = np.random.RandomState(7)
    data = rng.randint(0, 2, (300, 30))
    data[0] = 1
    if unit == 2:  # complement pairs: the cluster-robust sandwich on both
        data[1::2] = 1 - data[0::2]
    targets = rng.rand(300, 4)
    weights = np.sqrt(np.exp(-(1 - np.sqrt(data.sum(1) / 30)) ** 2 / 0.25 ** 2))
    fits = fit_labels(torch.from_numpy(data.astype(np.uint8)), torch.from_numpy(targets), weights,
                      method, num_features, unit)
    problem = WeightedProblem(data, targets, weights, unit)
    for label, fit in enumerate(fits):
        ref = problem.fit_label(label, num_features, method)
        assert [f for f, _ in fit.local_exp] == [f for f, _ in ref.local_exp]
        np.testing.assert_allclose([w for _, w in fit.local_exp], [w for _, w in ref.local_exp],
                                   rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(fit.intercept, ref.intercept, rtol=1e-9)
        np.testing.assert_allclose(fit.score, ref.score, rtol=1e-9)
        np.testing.assert_allclose(fit.local_pred, ref.local_pred, rtol=1e-9)
        assert set(fit.stderr) == set(ref.stderr)
        np.testing.assert_allclose([fit.stderr[f] for f in ref.stderr], list(ref.stderr.values()),
                                   rtol=1e-9)


@pytest.mark.parametrize("kwargs", [
    {"dedupe": True}, {"num_samples": "auto", "max_samples": 600},
    {"num_samples": "auto", "max_samples": 600, "dedupe": True},
    {"time_budget": 60.0, "num_samples": 120},
    {"num_samples": 201, "sampler": "paired"},
    {"num_samples": "auto", "max_samples": 600, "sampler": "paired", "dedupe": True},
])
def test_device_path_in_rounds_equals_cpu_path(kwargs):
    """Rounds and dedupe on the device executor: the CPU path in the same batches gives the
    same explanation (bitwise-equal model inputs, as above), stderr included."""
    clf = classifier()
    few = grid_segments(48, 48, 16)  # 9 superpixels: many repeated rows
    kwargs = {"segmentation_fn": lambda _: few, **kwargs}
    device = explain(clf, **kwargs)
    cpu = explain(cpu_path(clf), batch_size=clf.batch_for(IMAGE.shape), **kwargs)
    assert_same_explanation(cpu, device)
    assert (device.num_samples, device.num_evaluated, device.stop_reason) == (
        cpu.num_samples, cpu.num_evaluated, cpu.stop_reason)
    for label in cpu.stderr:
        np.testing.assert_allclose([device.stderr[label][f] for f in cpu.stderr[label]],
                                   list(cpu.stderr[label].values()), rtol=1e-9)
    if kwargs.get("dedupe"):  # 2^9 distinct rows at most, and one repeat checked
        assert device.num_evaluated <= min(device.num_samples, 2 ** 9) + 1


def test_device_surrogate_with_degenerate_columns():
    """A feature on in every row and two identical features: singular candidate systems."""
    rng = np.random.RandomState(11)
    data = rng.randint(0, 2, (200, 12))
    data[0] = 1
    data[:, 3] = 1
    data[:, 7] = data[:, 5]
    targets = rng.rand(200, 3)
    weights = rng.rand(200)
    problem = WeightedProblem(data, targets, weights)
    for method, num_features in [("forward_selection", 4), ("highest_weights", 5), ("none", 1)]:
        fits = fit_labels(torch.from_numpy(data.astype(np.uint8)), torch.from_numpy(targets),
                          weights, method, num_features)
        for label, fit in enumerate(fits):
            ref = dict(problem.fit_label(label, num_features, method).local_exp)
            got = dict(fit.local_exp)
            assert set(got) == set(ref)
            scale = max(abs(w) for w in ref.values())
            for f, w in ref.items():
                assert abs(got[f] - w) <= 1e-9 * scale


def _naive_model_ready(images, fudged, segments, rows, inst, k, b, channels_last):
    out = []
    for row, g in zip(rows, inst):
        on = row[segments[g]] != 0
        src = np.where(on[..., None], images[g], fudged[g]).astype(np.float32)
        x = src * k + b
        out.append(x.reshape(-1) if channels_last else x.transpose(2, 0, 1).reshape(-1))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [True, False])
def test_model_ready_cpu_kernels_match_naive(dtype, channels_last, monkeypatch):
    monkeypatch.setattr(config, "TASK_BYTES", 1)  # every sample its own task
    rng = np.random.RandomState(0)
    g, h, w, c = 3, 9, 7, 3
    images = (rng.rand(g, h, w, c) * 200).astype(dtype)
    fudged = (rng.rand(g, h, w, c) * 200).astype(dtype)
    segments = rng.randint(0, 5, (g, h, w))
    segments[:, 0, :5] = np.arange(5)
    rows = rng.randint(0, 2, (11, 6)).astype(np.uint8)
    inst = rng.randint(0, g, 11).astype(np.int32)
    k, b = model_ready.normalise_coefficients(1 / 255, MEAN, STD)
    row0, n = 3, 8
    expected = _naive_model_ready(images, fudged, segments, rows[row0:row0 + n],
                                  inst[row0:row0 + n], k, b, channels_last)
    fused = np.full((n + 2, h * w * c), np.nan, np.float32)
    model_ready.launch_model_ready_cpu(images.reshape(g, -1), fudged.reshape(g, -1),
                                       segments.reshape(g, -1), rows, inst, row0, n, k, b, fused,
                                       channels_last, task_bytes=config.TASK_BYTES)
    np.testing.assert_array_equal(fused[:n], expected)
    assert np.isnan(fused[n:]).all()
    plan = model_ready.RunPlan(images, fudged, segments, k, b, channels_last,
                               task_bytes=config.TASK_BYTES)
    runs = np.full_like(fused, np.nan)
    plan.write(rows, inst, row0, n, runs)
    np.testing.assert_array_equal(runs[:n], expected)


@st.composite
def model_ready_case(draw):
    g, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    c = draw(st.integers(1, 4))
    n_seg = draw(st.integers(1, min(8, h * w)))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    segments = rng.integers(0, n_seg, (g, h, w))
    for seg in segments:
        seg.ravel()[rng.permutation(h * w)[:n_seg]] = np.arange(n_seg)
        if draw(st.booleans()):
            seg.sort(axis=1)  # long runs
    images = (rng.random((g, h, w, c)) * 250).astype(dtype)
    fudged = (rng.random((g, h, w, c)) * 250).astype(dtype)
    n = draw(st.integers(1, 9))
    rows = rng.integers(0, 2, (n, n_seg)).astype(np.uint8)
    inst = rng.integers(0, g, n).astype(np.int32)
    k = rng.uniform(0.001, 2, c).astype(np.float32)
    b = rng.uniform(-3, 3, c).astype(np.float32)
    return images, fudged, segments, rows, inst, k, b, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(model_ready_case())
def test_model_ready_run_plan_property(case):
    images, fudged, segments, rows, inst, k, b, channels_last = case
    expected = _naive_model_ready(images, fudged, segments, rows, inst, k, b, channels_last)
    out = np.full((len(rows), images[0].size), np.nan, np.float32)
    model_ready.RunPlan(images, fudged, segments, k, b, channels_last).write(
        rows, inst, 0, len(rows), out)
    np.testing.assert_array_equal(out, expected)


# -- on a GPU (skipped without one) ------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_device_path(precision):
    cpu = explain(classifier(device="cpu"), num_samples=120)
    gpu = explain(classifier(TinyCNN().cuda(), device="cuda", precision=precision),
                  num_samples=120)
    if precision == "fp32":  # cuDNN convolutions run in TF32 by default
        float32_close(cpu, gpu, unit=U_TF32)
    label = cpu.top_labels[0]
    wa, wb = dict(cpu.local_exp[label]), dict(gpu.local_exp[label])
    features = sorted(wa)
    assert spearmanr([wa[f] for f in features], [wb[f] for f in features])[0] > 0.8


@pytest.mark.cuda
def test_cuda_graph_and_numpy_call_on_the_gpu():
    plain = classifier(TinyCNN().cuda(), device="cuda", precision="fp32")
    graph = classifier(TinyCNN().cuda(), device="cuda", precision="fp32", cuda_graph=True)
    float32_close(explain(plain, num_samples=70), explain(graph, num_samples=70), unit=U_TF32)
    np.testing.assert_allclose(plain(IMAGE[None]), classifier()(IMAGE[None]), rtol=1e-3,
                               atol=1e-5)


@pytest.mark.cuda
def test_cuda_arrays_are_taken_without_copies():
    tensor = torch.arange(12, dtype=torch.float32, device="cuda").view(3, 4)
    view = model_ready.as_cuda_array(tensor)
    assert view.__cuda_array_interface__["data"][0] == tensor.data_ptr()

    class OnlyDLPack:  # a foreign array that speaks DLPack alone
        def __dlpack__(self, **kwargs):
            return tensor.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return tensor.__dlpack_device__()

    dlpack_view = model_ready.as_cuda_array(OnlyDLPack())
    assert dlpack_view.__cuda_array_interface__["data"][0] == tensor.data_ptr()


@pytest.mark.cuda
def test_segment_means_of_a_cuda_tensor_on_its_device():
    from limefast.device import segment_means
    from limefast.kernels.segment_means import segment_means as host_means

    seg = grid_segments(48, 48).astype(np.int32)
    n = int(seg.max()) + 1
    # A channels-first tensor seen as (H, W, C): not contiguous.
    hwc = torch.from_numpy(IMAGE.transpose(2, 0, 1).copy()).cuda().permute(1, 2, 0)
    got = segment_means(hwc, torch.from_numpy(seg).cuda(), n)
    assert got.device == hwc.device
    np.testing.assert_array_equal(got.cpu().numpy(), host_means(IMAGE, seg, n))
    np.testing.assert_array_equal(segment_means(hwc, seg, n).cpu().numpy(),
                                  host_means(IMAGE, seg, n))  # host segments are uploaded
    with pytest.raises(ValueError, match="segment labels must lie in"):
        segment_means(hwc, seg, n - 1)
