"""One explanation by each implementation, timed stage by stage, and lime and limefast called
as a user calls them.

Every runner takes the same inputs (image, segments, a model in NumPy and torch forms) and
returns the per-label weights it found and its stage times in seconds:
segmentation, sampling (fudged image, 0/1 rows, distances), perturbation, model, surrogate.
The model's time is measured by wrapping it, so perturbation = (perturbation + model) - model.

lime 0.2.0.1 draws a tqdm bar over its samples and takes no argument to turn it off; every call
of lime here runs inside ``quiet_lime``, which sends the bar to a buffer, so lime is not charged
for writing it to a terminal.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field

import numpy as np

from limefast.optional import require

from .agreement import agreement, label_weights  # noqa: F401 - runners.agreement is public


@dataclass
class Run:
    """What one implementation did on one input."""

    name: str
    total: float
    stages: dict
    weights: dict = field(default_factory=dict)  # label -> {feature: weight}
    top_labels: list = field(default_factory=list)


class TimedModel:
    """Wraps a classifier_fn and adds up the seconds spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, batch):
        t0 = time.perf_counter()
        out = self.fn(batch)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def __getattr__(self, name):  # keep TorchClassifier's limefast_executor etc. visible
        return getattr(self.fn, name)


def lime_module():
    """lime 0.2.0.1's ``lime.lime_image``, or an ImportError with the install hint."""
    return require("lime.lime_image", "the comparison with lime")


@contextlib.contextmanager
def quiet_lime():
    """lime's progress bar (tqdm, on stderr) goes to a buffer while this is open."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def explain_lime(image, classifier_fn, *, random_state=0, **kwargs):
    """lime 0.2.0.1's ``LimeImageExplainer(random_state).explain_instance``, quietly."""
    explainer = lime_module().LimeImageExplainer(random_state=random_state)
    with quiet_lime():
        return explainer.explain_instance(image, classifier_fn, **kwargs)


def explain_limefast(image, classifier_fn, *, random_state=0, **kwargs):
    """limefast's ``LimeImageExplainer(random_state).explain_instance``, without its bar."""
    from limefast import lime_image

    explainer = lime_image.LimeImageExplainer(random_state=random_state)
    return explainer.explain_instance(image, classifier_fn, progress_bar=False, **kwargs)


def run_limefast(image, segments, model, *, num_samples, top_labels, batch_size=10,
                 segmentation_fn=None, name="limefast-cpu", images=None) -> Run:
    """limefast's explain_instance (or explain_batch when ``images`` is given)."""
    from limefast import lime_image

    timed = TimedModel(model)
    explainer = lime_image.LimeImageExplainer(random_state=0)
    seg_fn = segmentation_fn or (lambda im: segments)
    t0 = time.perf_counter()
    if images is None:
        explanations = [explainer.explain_instance(
            image, timed, top_labels=top_labels, num_samples=num_samples, batch_size=batch_size,
            segmentation_fn=seg_fn, progress_bar=False)]
    else:
        explanations = explainer.explain_batch(
            images, timed, top_labels=top_labels, num_samples=num_samples,
            batch_size=batch_size, segmentation_fn=seg_fn, progress_bar=False)
    total = time.perf_counter() - t0
    stages = {k: 0.0 for k in ("segmentation", "sampling", "perturbation", "model", "surrogate")}
    for e in explanations:
        stages["segmentation"] += e.timings["segmentation"]
        stages["sampling"] += e.timings["sampling"]
        stages["perturbation"] += e.timings["perturb_and_model"]
        stages["surrogate"] += e.timings["surrogate"]
    # A TorchClassifier's device path never calls the wrapper: its forward is in the timings.
    stages["model"] = timed.seconds if timed.calls else sum(
        e.timings.get("forward", 0.0) for e in explanations)
    stages["perturbation"] = max(0.0, stages["perturbation"] - stages["model"])
    first = explanations[0]
    return Run(name, total, stages, label_weights(first), [int(x) for x in first.top_labels])


def run_lime(image, segments, model, *, num_samples, top_labels, batch_size=10,
             segmentation_fn=None, images=None) -> Run:
    """lime 0.2.0.1's explain_instance, unrolled into its stages (same calls, same order)."""
    import sklearn.metrics

    lime_ref = lime_module()
    timed = TimedModel(model)
    stages = {k: 0.0 for k in ("segmentation", "sampling", "perturbation", "model", "surrogate")}
    first = None
    t_start = time.perf_counter()
    for img in images if images is not None else [image]:
        explainer = lime_ref.LimeImageExplainer(random_state=0)
        t0 = time.perf_counter()
        random_seed = explainer.random_state.randint(0, high=1000)
        if segmentation_fn is not None:
            seg = segmentation_fn(img)
        else:
            seg = segments
        t1 = time.perf_counter()
        fudged = img.copy()
        for x in np.unique(seg):
            fudged[seg == x] = tuple(np.mean(img[seg == x][:, c]) for c in range(img.shape[2]))
        t2 = time.perf_counter()
        timed.seconds = 0.0
        with quiet_lime():
            data, labels = explainer.data_labels(img, fudged, seg, timed, num_samples,
                                                 batch_size=batch_size)
        t3 = time.perf_counter()
        distances = sklearn.metrics.pairwise_distances(data, data[0:1], metric="cosine").ravel()
        t4 = time.perf_counter()
        top = np.argsort(labels[0])[-top_labels:]
        exp = {}
        for label in top:
            _, local, _, _ = explainer.base.explain_instance_with_data(
                data, labels, distances, label, 100000,
                feature_selection=explainer.feature_selection)
            exp[int(label)] = {int(f): float(w) for f, w in local}
        t5 = time.perf_counter()
        del random_seed
        stages["segmentation"] += t1 - t0
        stages["sampling"] += (t2 - t1) + (t4 - t3)
        stages["model"] += timed.seconds
        stages["perturbation"] += (t3 - t2) - timed.seconds
        stages["surrogate"] += t5 - t4
        if first is None:
            first = (exp, [int(x) for x in reversed(top)])
    return Run("lime", time.perf_counter() - t_start, stages, first[0], first[1])


def run_captum(image, segments, torch_forward, *, num_samples, top_labels, batch_size=10,
               labels=None, images=None) -> Run:
    """captum's Lime given the same superpixels (``feature_mask``), one call per label.

    captum explains one target per call; ``labels`` are the ones the other runners explain.
    Its defaults differ from lime's (Lasso surrogate, its own kernel), so only time is compared.
    """
    torch = require("torch", "the comparison with captum")
    explainer = require("captum.attr", "the comparison with captum").Lime(torch_forward)
    t0 = time.perf_counter()
    weights = {}
    for img in images if images is not None else [image]:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        mask = torch.from_numpy(segments.astype(np.int64))[None, None].expand_as(x)
        for label in labels[:top_labels]:
            attr = explainer.attribute(x, target=int(label), feature_mask=mask,
                                       n_samples=num_samples, perturbations_per_eval=batch_size,
                                       return_input_shape=False)
            if img is (images[0] if images is not None else image):
                weights[int(label)] = {i: float(w) for i, w in enumerate(attr[0].tolist())}
    total = time.perf_counter() - t0
    return Run("captum", total, {"total": total}, weights, list(labels[:top_labels]))
