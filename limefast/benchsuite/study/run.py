"""Running the study: references, lime's fixed counts and ``"auto"``, one record per explained
label."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from limefast import config
from limefast.benchsuite.agreement import interval_coverage, top_k_overlap

from .cases import FILLS, Case, StudyModel, segment

REFERENCE_SEED_OFFSET = 10_000
DEFAULT = "default"  # the "auto" setting of the explainer's defaults (rounds.auto_defaults)
# A reference label whose every |weight| is at most this explains nothing: its outputs moved by
# float rounding only (a saturated softmax), and its top 5 is a tie broken by feature number,
# which a run of the same flat model shares for that reason alone.
FLAT_WEIGHT = 1e-6


@dataclass
class StudyConfig:
    """Sizes of the study; ``quick()`` is a smoke run of a few seconds."""

    models: tuple = ("digits-cnn", "faces-mlp", "shapes-cnn", "stripes-keras", "blobs-cnn",
                     "faces-cnn")
    # images per (model, segmenter, fill) and half: 4 x 3 x 2 x 3 = 72 tuning cases, and 6 x 3
    # x 2 x 3 = 108 held-out ones (blobs-cnn and faces-cnn are held-out only)
    per_cell: int = 3
    seeds: int = 2
    reference_samples: int = 16000
    samples: tuple = (150, 300, 500, 1000)  # lime's fixed counts (1000: lime's default)
    targets: tuple = (0.85, 0.9, 0.97)  # "auto" targets measured besides the default
    top_k: int = 5
    batch_size: int = 250  # does not change an explanation, only the model's batches
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls) -> StudyConfig:
        return cls(models=("digits-cnn", "shapes-cnn"), per_cell=1, seeds=1,
                   reference_samples=2000, samples=(150, 1000), targets=())


class Memo:
    """A classifier_fn that asks the model once per distinct image: lime's fixed counts and
    ``"auto"`` of one seed share their rows (prefixes of one draw), so the study pays the model
    once for them. The explainers still count every image they hand over."""

    def __init__(self, fn):
        self.fn, self.store = fn, {}

    def __call__(self, batch):
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in batch]
        missing = [i for i, key in enumerate(keys) if key not in self.store]
        if missing:
            out = np.asarray(self.fn(batch[missing]), dtype=np.float64)
            self.store.update((keys[i], out[j]) for j, i in enumerate(missing))
        return np.stack([self.store[key] for key in keys])


def explain(image, classifier, segments, seed, num_samples, top_labels, hide_color, cfg,
            **kwargs):
    from limefast import lime_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lime_image.SamplingWarning)  # recorded, not news
        return lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            image, classifier, top_labels=top_labels, num_samples=num_samples,
            hide_color=hide_color, segmentation_fn=lambda _: segments,
            batch_size=cfg.batch_size, progress_bar=False, **kwargs)


class Study:
    """The models, the cases, their references (cached in ``folder``) and memoised models."""

    def __init__(self, models: dict[str, StudyModel], cases: list[Case], cfg: StudyConfig,
                 folder: Path | None = None):
        self.models, self.cases, self.cfg = models, cases, cfg
        self.path = folder / f"references-{cfg.reference_samples}.json" if folder else None
        self.refs = json.loads(self.path.read_text()) if self.path and self.path.is_file() \
            else {}
        self.memos: dict = {}

    def _inputs(self, case: Case):
        model = self.models[case.model]
        image = model.test_images[case.test_index]
        return model, image, segment(image, case.segmenter, case.params)

    def reference(self, case: Case) -> dict:
        """label -> {"w": {feature: weight}, "se": {...}, "rank": r, "flat": bool}."""
        if case.key not in self.refs:
            model, image, segments = self._inputs(case)
            e = explain(image, model.classifier, segments, REFERENCE_SEED_OFFSET + case.index,
                        self.cfg.reference_samples, min(3, model.n_classes),
                        FILLS[case.fill], self.cfg, dedupe=True)
            out = {}
            for rank, label in enumerate(e.top_labels):
                w = {int(f): float(v) for f, v in e.local_exp[label]}
                out[str(int(label))] = {
                    "w": w, "se": {int(f): float(s) for f, s in e.stderr[label].items()},
                    "rank": rank}
            self.refs[case.key] = out
            if self.path:
                self.path.write_text(json.dumps(self.refs))
        return {int(k): {**v, "w": {int(f): x for f, x in v["w"].items()},
                         "se": {int(f): x for f, x in v["se"].items()},
                         "flat": max(map(abs, v["w"].values())) <= FLAT_WEIGHT}
                for k, v in self.refs[case.key].items()}

    def _memo(self, case: Case, seed: int) -> Memo:
        key = (case.key, seed)
        if key not in self.memos:
            self.memos[key] = Memo(self.models[case.model].classifier)
        return self.memos[key]

    def _records(self, case, ref, e, seed, setting, top_labels, spread, target=None,
                 coverage=False):
        rows = []
        for label in e.top_labels:
            label = int(label)
            r = ref.get(label)
            w = {int(f): float(v) for f, v in e.local_exp[label]}
            row = {"case": case.index, "half": case.half, "model": case.model,
                   "segmenter": case.segmenter, "fill": case.fill,
                   "superpixels": case.superpixels, "seed": seed, "setting": setting,
                   "top_labels": top_labels, "label": label, "spread": spread,
                   "target": target, "images": int(e.num_evaluated),
                   "stated": float(e.expected_overlap[label]),
                   "sampler": e.sampler, "stop_reason": e.stop_reason,
                   "flat_reference": r is None or r["flat"],
                   "overlap": top_k_overlap(w, r["w"], self.cfg.top_k) if r else 0.0}
            if coverage and r:
                se = {int(f): float(s) for f, s in e.stderr[label].items()}
                row["covered"], row["features"] = interval_coverage(w, se, r["w"])
            rows.append(row)
        return rows

    def fixed(self, case: Case, spreads, samplers=("lime",)) -> list[dict]:
        """Fixed counts of each row design (top 3 labels; a top-1 run is the first label's
        part), each with its stated overlap at every spread: setting ``"1000"`` for lime's
        rows, ``"paired 1000"`` for another design's."""
        model, image, segments = self._inputs(case)
        ref = self.reference(case)
        top = min(3, model.n_classes)
        out = []
        for seed in range(self.cfg.seeds):
            memo = self._memo(case, seed)
            for sampler in samplers:
                for n in self.cfg.samples:
                    setting = str(n) if sampler == "lime" else f"{sampler} {n}"
                    for i, spread in enumerate(spreads):
                        with _spread(spread):
                            e = explain(image, memo, segments, seed, n, top,
                                        FILLS[case.fill], self.cfg, sampler=sampler)
                        out += self._records(case, ref, e, seed, setting, top, spread,
                                             coverage=i == 0 and n == max(self.cfg.samples))
        return out

    def auto(self, case: Case, spread: float, targets) -> list[dict]:
        """``"auto"`` with top_labels 1 and 3 at every target; the target ``"default"`` is
        the explainer's defaults for the case's fill (nothing passed)."""
        model, image, segments = self._inputs(case)
        ref = self.reference(case)
        out = []
        for seed in range(self.cfg.seeds):
            memo = self._memo(case, seed)
            for top in sorted({1, min(3, model.n_classes)}):
                for target in targets:
                    given = {} if target == DEFAULT else {"target_overlap": target}
                    with _spread(spread):
                        e = explain(image, memo, segments, seed, "auto", top,
                                    FILLS[case.fill], self.cfg, **given)
                    out += self._records(case, ref, e, seed, "auto", top, spread, target,
                                         coverage=True)
        return out


class _spread:
    """``config.AUTO_SPREAD`` set for a while."""

    def __init__(self, value):
        self.value = value

    def __enter__(self):
        self.old, config.AUTO_SPREAD = config.AUTO_SPREAD, self.value

    def __exit__(self, *exc):
        config.AUTO_SPREAD = self.old


def flat_check(models: dict[str, StudyModel], cfg: StudyConfig, images: int = 3) -> list[dict]:
    """``"auto"`` on models whose output does not depend on the superpixels: a constant one and
    the first model with its softmax saturated (800 added to the image's top logit: its
    probability is 1.0 to float64 rounding). Images seen and why it stopped."""
    model = next(iter(models.values()))

    def constant(batch):
        return np.full((len(batch), model.n_classes), 1.0 / model.n_classes)

    def saturated(batch):
        z = np.log(np.clip(model.classifier(batch), 1e-300, 1.0))
        z[:, top] += 800.0
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    out = []
    for name, fn in (("constant", constant), ("saturated softmax", saturated)):
        for i in range(images):
            image = model.test_images[i]
            top = int(model.classifier(image[None]).argmax())
            segments = segment(image, "slic", dict(n_segments=40, compactness=10,
                                                   start_label=0))
            e = explain(image, fn, segments, i, "auto", 1, 0, cfg)
            out.append({"model": name, "image": i, "images": int(e.num_evaluated),
                        "stop_reason": e.stop_reason, "converged": bool(e.converged)})
    return out


def config_record(cfg: StudyConfig) -> dict:
    return asdict(cfg)
