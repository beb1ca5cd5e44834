"""``make demo``: explain a bundled photo with lime and limefast, side by side.

Nothing is downloaded: the image is scikit-image's bundled ``chelsea`` (a cat), and the model is a
small colour-and-texture classifier fitted here in well under a second on patches of scikit-image's
bundled photos. The demo explains the model's top labels with limefast's default quickshift
segmentation, writes the overlay as a PNG, checks that lime 0.2.0.1 gives the same explanation
for the same seed, and prints both times.

Run: ``python -m limefast.demo [--out DIR] [--num-samples N] [--no-lime]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import lime_image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


class PatchClassifier:
    """Which bundled photo does an image look like? A nearest-centroid model on 4x4 grids of
    mean colours, with softmax scores; fitted on random crops of the photos (no download)."""

    def __init__(self, size: int = 224, seed: int = 0):
        from skimage import data, transform

        rng = np.random.default_rng(seed)
        features, targets = [], []
        for label, name in enumerate(PHOTOS):
            photo = getattr(data, name)()[..., :3]
            for _ in range(12):
                h, w = photo.shape[:2]
                side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
                y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = transform.resize(photo[y:y + side, x:x + side], (size, size),
                                        anti_aliasing=True, preserve_range=True)
                features.append(self._features(crop[None].astype(np.uint8)))
                targets.append(label)
        features = np.concatenate(features)
        targets = np.array(targets)
        self.centroids = np.stack([features[targets == k].mean(0) for k in range(len(PHOTOS))])
        self.scale = features.std() + 1e-9

    @staticmethod
    def _features(batch: np.ndarray) -> np.ndarray:
        n, h, w, c = batch.shape
        grid = batch[:, : h - h % 4, : w - w % 4].reshape(n, 4, h // 4, 4, w // 4, c)
        return grid.mean(axis=(2, 4)).reshape(n, -1) / 255.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        d = ((self._features(batch)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        z = -d / (2 * self.scale**2) / 4  # temperature: confident, not saturated
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for the PNG (default demo-out)")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--no-lime", action="store_true", help="skip the lime comparison")
    args = parser.parse_args(argv)

    from skimage import data, transform
    from skimage.segmentation import mark_boundaries

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"limefast demo: cannot create output folder {out}: {exc}", file=sys.stderr)
        return 2
    image = (transform.resize(data.chelsea(), (224, 224), anti_aliasing=True) * 255).astype(
        np.uint8)
    model = PatchClassifier()

    explainer = lime_image.LimeImageExplainer(random_state=0)
    explainer.explain_instance(image, model, num_samples=50, progress_bar=False)  # warm kernels
    t0 = time.perf_counter()
    explanation = lime_image.LimeImageExplainer(random_state=42).explain_instance(
        image, model, top_labels=3, num_samples=args.num_samples, progress_bar=True)
    fast = time.perf_counter() - t0
    top = explanation.top_labels[0]
    print(f"model's top label: {PHOTOS[top]!r} (p={model(image[None])[0, top]:.3f}); "
          f"{len(np.unique(explanation.segments))} superpixels")
    print("strongest superpixels for it:",
          ", ".join(f"#{f} {w:+.3f}" for f, w in explanation.local_exp[top][:5]))

    shown, mask = explanation.get_image_and_mask(top, positive_only=False, num_features=8)
    overlay = (mark_boundaries(shown / 255.0, mask) * 255).astype(np.uint8)
    from PIL import Image

    path = out / "chelsea_explanation.png"
    Image.fromarray(overlay).save(path)
    print(f"overlay written to {path} (green: evidence for, red: against)")
    print(f"limefast explain_instance: {fast:.3f} s (quickshift segmentation included)")

    if not args.no_lime:
        try:
            from lime import lime_image as lime_ref
        except ImportError:
            print("lime is not installed (pip install lime==0.2.0.1): comparison skipped")
            return 0
        t0 = time.perf_counter()
        reference = lime_ref.LimeImageExplainer(random_state=42).explain_instance(
            image, model, top_labels=3, num_samples=args.num_samples)
        slow = time.perf_counter() - t0
        same = reference.top_labels == explanation.top_labels and all(
            [f for f, _ in reference.local_exp[k]] == [f for f, _ in explanation.local_exp[k]]
            and np.allclose([w for _, w in reference.local_exp[k]],
                            [w for _, w in explanation.local_exp[k]], rtol=1e-9, atol=1e-12)
            for k in reference.local_exp)
        print(f"lime 0.2.0.1 explain_instance: {slow:.3f} s -> limefast is {slow / fast:.1f}x "
              f"faster; same explanation: {'yes' if same else 'NO'}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
