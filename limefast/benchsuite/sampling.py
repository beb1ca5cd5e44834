"""The sampling study: how an explanation converges with the number of images the model sees.

Two models trained here in seconds (``limefast.models.digits``'s CNN on 32x32 digits and
``limefast.models.faces``'s MLP on 50x50 faces and non-faces), held-out test images, SLIC
superpixels.
For every image and seed, a reference explanation with many samples; then lime-style fixed
sampling at several ``num_samples`` and ``num_samples="auto"``. Each run is scored by the overlap
of its top-5 features (by ``|weight|`` of the top label) with the reference's top 5, against the
images the model saw (``explanation.num_evaluated``). Runs that report standard errors
(``explanation.stderr``) are also scored by how often their nominal 90% interval
``w +- 1.645 se`` covers the reference weight of the same feature.

The reference uses its own seed (``REFERENCE_SEED_OFFSET + seed``): lime draws all 0/1 rows in
one ``randint`` call, so a run with the reference's seed would fit the first rows of the
reference's own sample and agree with it for that reason alone. Runs whose reference is flat
(``FLAT_WEIGHT``) are kept in the records but left out of the per-setting means.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from limefast.optional import available

from .agreement import top_features, top_k_overlap  # noqa: F401 - sampling's public names
from .study import cases

REFERENCE_SEED_OFFSET = 10_000
Z90 = 1.645  # two-sided 90% normal quantile
# A reference whose every |weight| is at most this explains nothing: the model's output did not
# move on any of its samples (all of an MLP's hidden units off, say). Its top 5 is a tie broken
# by feature number, so its runs are left out of the means and counted apart.
FLAT_WEIGHT = 1e-12


@dataclass
class StudyConfig:
    """Sizes of the sampling study; ``quick()`` is a smoke run of a few seconds per model."""

    images: int = 20  # per model, held-out test images
    seeds: int = 2
    reference_samples: int = 16000
    samples: tuple = (100, 200, 300, 500, 1000, 2000)
    auto: bool = True
    auto_max_samples: int | None = None  # None: the explainer's default cap
    coverage_at: tuple = (1000,)  # fixed counts whose intervals are scored (auto always is)
    top_k: int = 5
    hard_share: float = 0.25  # of the images: the test images the model is least sure of
    batch_size: int = 200  # does not change an explanation, only the model's batches
    models: tuple = ("digits-cnn", "faces-mlp")

    @classmethod
    def quick(cls) -> StudyConfig:
        return cls(images=3, seeds=1, reference_samples=2000, samples=(100, 300, 1000))


# -- metrics ----------------------------------------------------------------------------------
def interval_coverage(weights: Mapping[int, float], stderr: Mapping[int, float],
                      reference: Mapping[int, float], z: float = Z90,
                      reference_stderr: Mapping[int, float] | None = None) -> tuple[int, int]:
    """(covered, total): reference features whose weight lies in ``w +- z * se`` of the run.

    A feature the run has no weight for counts as not covered. With ``reference_stderr`` the
    interval is widened to ``z * sqrt(se**2 + se_ref**2)``: the reference's own sampling noise.
    """
    covered = 0
    for f, w_ref in reference.items():
        if f not in weights or f not in stderr:
            continue
        se2 = stderr[f] ** 2 + (reference_stderr.get(f, 0.0) ** 2 if reference_stderr else 0.0)
        covered += abs(weights[f] - w_ref) <= z * np.sqrt(se2)
    return int(covered), len(reference)


# -- models -----------------------------------------------------------------------------------
@dataclass
class StudyModel(cases.StudyModel):
    """One model of the study (as the two-halves study has them), with its superpixel rule."""

    segment: Callable = None  # image -> (H, W) labels 0..n-1
    extra: dict = field(default_factory=dict)


def digits_model() -> StudyModel:
    from skimage.segmentation import slic

    from limefast.models import digits

    trained = digits.load_model()
    # 32x32 digits are mostly flat background: compactness 10 keeps SLIC near its grid there,
    # n_segments=40 then gives 25-35 superpixels per image.
    return StudyModel("digits-cnn", "limefast.models.digits CNN, 4 conv layers, 32x32, 10 classes",
                      digits.DigitsClassifier(trained.model), trained.data.test_images,
                      trained.data.test_labels, trained.accuracy, 10,
                      lambda im: slic(im, n_segments=40, compactness=10, start_label=0),
                      {"slic": {"n_segments": 40, "compactness": 10}})


def faces_model() -> StudyModel:
    from skimage.segmentation import slic

    from limefast.models import faces

    trained = faces.load_model()
    # On 50x50 crops SLIC's grid snaps n_segments 40 to 6x6; 45 gives 7x7 (37-49 superpixels).
    return StudyModel("faces-mlp",
                      "limefast.models.faces MLP 625-32-2, 50x50 lfw_subset, face/non-face",
                      faces.FacesClassifier(trained.model), trained.data.test_images,
                      trained.data.test_labels, trained.accuracy, 2,
                      lambda im: slic(im, n_segments=45, compactness=10, start_label=0),
                      {"slic": {"n_segments": 45, "compactness": 10}})


MODELS = {"digits-cnn": digits_model, "faces-mlp": faces_model}


def pick_images(probabilities: np.ndarray, labels: np.ndarray, n: int,
                hard_share: float) -> list[int]:
    """Test indices: the ``hard_share * n`` the model gives the lowest probability to the true
    label (misclassified ones first, as they have the lowest), then the first others in order."""
    n = min(n, len(labels))
    p_true = probabilities[np.arange(len(labels)), labels]
    hard = [int(i) for i in np.argsort(p_true, kind="stable")[: int(round(n * hard_share))]]
    rest = [i for i in range(len(labels)) if i not in set(hard)][: n - len(hard)]
    return sorted(hard + rest)


# -- the study --------------------------------------------------------------------------------
def _explain(image, model: StudyModel, segments, seed: int, num_samples, cfg: StudyConfig):
    from limefast import lime_image

    kw = {"max_samples": cfg.auto_max_samples} if num_samples == "auto" and \
        cfg.auto_max_samples is not None else {}
    with warnings.catch_warnings():
        # An unsettled "auto" run is a result here (converged=False is recorded), not news.
        warnings.simplefilter("ignore", getattr(lime_image, "SamplingWarning", Warning))
        return lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            image, model.classifier, top_labels=1, num_samples=num_samples,
            segmentation_fn=lambda im: segments, batch_size=cfg.batch_size, progress_bar=False,
            **kw)


def _weights(explanation, label) -> dict:
    return {int(f): float(w) for f, w in explanation.local_exp.get(label, [])}


def _stderr(explanation, label) -> dict | None:
    stderr = getattr(explanation, "stderr", None)
    if stderr is None or label not in stderr:
        return None
    return {int(f): float(s) for f, s in stderr[label].items()}


def images_seen(explanation, requested) -> int:
    """Images the model saw: ``num_evaluated`` where the explainer reports it."""
    for name in ("num_evaluated", "num_samples"):
        value = getattr(explanation, name, None)
        if value is not None:
            return int(value)
    return int(requested)


def auto_unavailable(model: StudyModel, cfg: StudyConfig) -> str | None:
    """None if the explainer takes ``num_samples="auto"``, else why not (its error)."""
    image = model.test_images[0]
    segments = model.segment(image)
    try:
        _explain(image, model, segments, 0, "auto", cfg)
    except (TypeError, ValueError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def study_model(model: StudyModel, cfg: StudyConfig, progress=None) -> dict:
    """Every run of one model: per-run records and their summary per setting."""
    probabilities = np.concatenate([model.classifier(model.test_images[i:i + 256])
                                    for i in range(0, len(model.test_images), 256)])
    chosen = pick_images(probabilities, model.test_labels, cfg.images, cfg.hard_share)
    no_auto = auto_unavailable(model, cfg) if cfg.auto else "disabled in the configuration"
    settings = [str(n) for n in cfg.samples] + ([] if no_auto else ["auto"])
    scored = {str(n) for n in cfg.coverage_at} | {"auto"}
    runs, images = [], []
    for number, index in enumerate(chosen):
        image = model.test_images[index]
        segments = model.segment(image)
        images.append({"test_index": index, "label": int(model.test_labels[index]),
                       "predicted": int(probabilities[index].argmax()),
                       "p_label": float(probabilities[index, model.test_labels[index]]),
                       "superpixels": int(len(np.unique(segments)))})
        for seed in range(cfg.seeds):
            ref = _explain(image, model, segments, REFERENCE_SEED_OFFSET + seed,
                           cfg.reference_samples, cfg)
            label = ref.top_labels[0]
            ref_w, ref_se = _weights(ref, label), _stderr(ref, label)
            flat = max(map(abs, ref_w.values()), default=0.0) <= FLAT_WEIGHT
            for setting in settings:
                requested = setting if setting == "auto" else int(setting)
                e = _explain(image, model, segments, seed, requested, cfg)
                w = _weights(e, label)  # empty if the run's top label differed: overlap 0
                row = {"image": index, "seed": seed, "setting": setting,
                       "images_seen": images_seen(e, requested),
                       "overlap": top_k_overlap(w, ref_w, cfg.top_k)}
                se = _stderr(e, label)
                if setting in scored and se is not None:
                    row["covered"], row["features"] = interval_coverage(w, se, ref_w)
                    if ref_se is not None:
                        row["covered_with_reference_se"] = interval_coverage(
                            w, se, ref_w, reference_stderr=ref_se)[0]
                if flat:
                    row["flat_reference"] = True
                if setting == "auto":
                    row["converged"] = getattr(e, "converged", None)
                    row["stop_reason"] = getattr(e, "stop_reason", None)
                runs.append(row)
        if progress:
            progress(f"sampling {model.name}: image {number + 1}/{len(chosen)}")
    return {"model": model.name, "description": model.description,
            "test_accuracy": model.accuracy, **model.extra, "images": images,
            "misclassified": sum(i["predicted"] != i["label"] for i in images),
            "flat_references": sorted({(r["image"], r["seed"]) for r in runs
                                       if r.get("flat_reference")}),
            "auto_unavailable": no_auto, "auto": _auto_summary(runs),
            "settings": summarise(runs, settings), "runs": runs}


def summarise(runs: list[dict], settings: list[str]) -> list[dict]:
    """Per setting: mean top-5 overlap (and its standard error over runs), mean/min/max images
    seen and, where scored, the pooled interval coverage; runs with a flat reference left out."""
    out = []
    for setting in settings:
        rows = [r for r in runs if r["setting"] == setting and not r.get("flat_reference")]
        if not rows:
            continue
        overlap = np.array([r["overlap"] for r in rows], float)
        seen = np.array([r["images_seen"] for r in rows], float)
        entry = {"setting": setting, "runs": len(rows), "overlap": float(overlap.mean()),
                 "overlap_se": float(overlap.std(ddof=1) / np.sqrt(len(rows)))
                 if len(rows) > 1 else float("nan"),
                 "images_seen": float(seen.mean()), "images_seen_min": int(seen.min()),
                 "images_seen_max": int(seen.max())}
        features = sum(r.get("features", 0) for r in rows)
        if features:
            entry["coverage"] = sum(r["covered"] for r in rows) / features
            entry["coverage_features"] = features
            if all("covered_with_reference_se" in r for r in rows if "features" in r):
                entry["coverage_with_reference_se"] = sum(
                    r.get("covered_with_reference_se", 0) for r in rows) / features
        out.append(entry)
    return out


def _auto_summary(runs: list[dict]) -> dict:
    """Convergence of the "auto" runs, flat references included (apart: what auto did there)."""
    auto_runs = [r for r in runs if r["setting"] == "auto"]
    if not auto_runs:
        return {}
    converged = [r["converged"] for r in auto_runs if r["converged"] is not None]
    flat = [r for r in auto_runs if r.get("flat_reference")]
    return {"converged": float(np.mean(converged)) if converged else None,
            "stop_reasons": dict(Counter(str(r["stop_reason"]) for r in auto_runs)),
            "on_flat_references": [{k: r.get(k) for k in ("image", "seed", "images_seen",
                                                          "converged", "stop_reason")}
                                   for r in flat]}


def sampling_study(cfg: StudyConfig | None = None, progress=None) -> dict:
    """The section: one entry per model, plus the configuration it ran with."""
    cfg = cfg or StudyConfig()
    if not available("torch"):
        return {"skipped": "torch not installed (pip install limefast[torch])",
                "config": asdict(cfg)}
    return {"config": asdict(cfg), "reference_seed_offset": REFERENCE_SEED_OFFSET,
            "models": [study_model(MODELS[name](), cfg, progress) for name in cfg.models]}
