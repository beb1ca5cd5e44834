"""The device path of a ``TorchDetector``: LIME's and KernelSHAP's perturbed images written
model-ready by the classifier's kernels on the detector's device (the CPU here), the targets'
scores kept there and the surrogate solved there; the same explanation as the host path (the
detector wrapped in a plain function), every switch included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from limefast.core.executor import CPU_EXECUTOR, Executor  # noqa: E402
from limefast.detection import DetectionExplainer, TorchDetector  # noqa: E402
from limefast.detection.scores import TargetScores  # noqa: E402
from limefast.device.executor import TorchExecutor  # noqa: E402
from tests.detection_models import grid_segments, scene  # noqa: E402


class ChannelBoxModule(torch.nn.Module):
    """A torchvision-style detector (a list of (3, H, W) float tensors in [0, 1] -> a dict per
    image): fixed candidate boxes scored by a 1x1 convolution's channel means inside them, the
    class the best channel; candidates under ``threshold`` are dropped."""

    def __init__(self, boxes, size: int = 48, shift: int = 3, threshold: float = 0.1):
        super().__init__()
        cands = []
        for (x1, y1, x2, y2), _ in boxes:
            cands += [(x1, y1, x2, y2), (x1 + shift, y1 + shift, x2 + shift, y2 + shift)]
        inside = torch.zeros((len(cands), size, size))
        for k, (x1, y1, x2, y2) in enumerate(cands):
            inside[k, y1:y2, x1:x2] = 1.0 / ((y2 - y1) * (x2 - x1))
        self.register_buffer("candidates", torch.tensor(cands, dtype=torch.float32))
        self.register_buffer("inside", inside)
        self.mix = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3)[:, :, None, None] * 0.9 + 0.05)
            self.mix.bias.fill_(0.01)
        self.threshold = threshold

    def forward(self, images):
        mixed = self.mix(torch.stack(images))
        means = torch.einsum("nchw,khw->nkc", mixed, self.inside)
        scores, labels = means.max(dim=2)
        out = []
        for s, lab in zip(scores, labels):
            keep = s >= self.threshold
            out.append({"boxes": self.candidates[keep], "scores": s[keep], "labels": lab[keep]})
        return out


@pytest.fixture(scope="module")
def setup():
    image, boxes = scene(2)
    model = ChannelBoxModule(boxes).eval()
    return image, TorchDetector(model, batch_size=16)


def test_a_torch_detector_is_explained_on_its_device(setup):
    _, detector = setup
    first = TargetScores(detector, []).limefast_executor()
    second = TargetScores(detector, []).limefast_executor()
    assert isinstance(first.executor, TorchExecutor) and isinstance(first, Executor)
    # one executor per detector, its workspaces kept; each explanation's scores its own
    assert first.executor is second.executor and first.scores is not second.scores
    assert TargetScores(lambda images: detector(images), []).limefast_executor() is CPU_EXECUTOR


CASES = {
    "lime": dict(method="lime", num_samples=100),
    "paired": dict(method="lime", num_samples=100, sampler="paired"),
    "auto": dict(method="lime", num_samples="auto", max_samples=200),
    "dedupe": dict(method="lime", num_samples=100, dedupe=True),
    "kernelshap": dict(method="kernelshap", num_samples=160),
    "float image": dict(method="lime", num_samples=60, float_image=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_device_path_gives_the_host_paths_explanation(case, setup, monkeypatch):
    image, detector = setup
    calls = []
    predict = TorchExecutor.predict

    def counted(self, instances, *args, **kwargs):
        calls.append(sum(inst.data.shape[0] for inst in instances))
        return predict(self, instances, *args, **kwargs)

    monkeypatch.setattr(TorchExecutor, "predict", counted)
    kwargs = dict(CASES[case])
    if kwargs.pop("float_image", False):
        image = image.astype(np.float32) / 255
    kwargs.update(score_threshold=0.3, segmentation_fn=lambda im: grid_segments(im, 8),
                  batch_size=16)
    on_device = DetectionExplainer(random_state=4).explain_instance(image, detector, **kwargs)
    device_rows = sum(calls)
    on_host = DetectionExplainer(random_state=4).explain_instance(
        image, lambda images: detector(images), **kwargs)
    assert sum(calls) == device_rows > 0  # every row on the device path, none on the host's
    assert len(on_device.targets) == len(on_host.targets) >= 3
    assert on_device.num_forwards == on_host.num_forwards
    assert on_device.num_evaluated == on_host.num_evaluated
    for i in range(len(on_host.targets)):
        assert [f for f, _ in on_device.local_exp[i]] == [f for f, _ in on_host.local_exp[i]]
        np.testing.assert_allclose([w for _, w in on_device.local_exp[i]],
                                   [w for _, w in on_host.local_exp[i]], rtol=0, atol=1e-9)
        assert on_device.intercept[i] == pytest.approx(on_host.intercept[i], abs=1e-9)
        assert on_device.stop_reasons[i] == on_host.stop_reasons[i]
        if case != "kernelshap":
            assert on_device.score[i] == pytest.approx(on_host.score[i], abs=1e-9)
            for f, _ in on_host.local_exp[i]:
                assert on_device.stderr[i][f] == pytest.approx(on_host.stderr[i][f], abs=1e-9)


def test_the_device_path_reports_a_bad_answer_with_its_batch(setup):
    image, detector = setup

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, images):
            self.calls += 1
            if self.calls > 2:  # the image's own forward and the first batch pass
                return [{"boxes": torch.tensor([[5.0, 5.0, 1.0, 9.0]]),
                         "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
                        for _ in images]
            return detector.model(images)

    broken = TorchDetector(Broken(), batch_size=16)
    with pytest.raises(ValueError, match=r"image 0 of batch 1 .*negative width"):
        DetectionExplainer(random_state=0).explain_instance(
            image, broken, num_samples=64, score_threshold=0.3, segmentation_fn=grid_segments)
