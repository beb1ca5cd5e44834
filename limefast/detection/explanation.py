"""``DetectionExplanation``: one explanation per target, keyed by the target's index, with the
classifier explanation's interface (``local_exp[i]``, ``render(i)``, ``get_image_and_mask(i)``)
and, for D-RISE, a saliency map per target."""

from __future__ import annotations

import numpy as np

from limefast.core.explanation import ImageExplanation
from limefast.core.record import number
from limefast.detection.protocol import Target


class DetectionExplanation(ImageExplanation):
    """Explanations of a detector's targets on one image.

    Its attributes are ``ImageExplanation``'s, keyed by the target's index ``i`` where a label
    would be, and these:

    - ``targets``: the explained ``Target``s, in order (``.box``, ``.label``, ``.score``);
    - ``method``: ``"lime"``, ``"kernelshap"`` or ``"drise"``;
    - ``local_exp[i]``: target i's ``(superpixel, weight)`` pairs (LIME, KernelSHAP);
    - ``saliency[i]``: target i's (H, W) float64 D-RISE map, min-max scaled to [0, 1] as the
      reference scales it (``method="drise"``); ``saliency_raw[i]`` the map before;
    - ``prediction``: (n_targets,) the targets' scores on the image itself;
    - ``stop_reasons[i]``: target i's stop reason: the explanation's ``stop_reason``, or
      ``'flat'`` when no perturbed image changed its score (a given box the model never
      matches): its weights are then all 0 and say nothing;
    - ``num_forwards``: the detector's images, every target's together;
    - ``mask_seed``: D-RISE's masks are ``drise_masks(num_samples, shape, seed=mask_seed)``
      (None when they were given);
    - ``task``: ``"detection"``, or ``"segmentation"`` (``explain_segmentation``: each target
      carries its ``region``).
    """

    def __init__(self, image: np.ndarray, segments: np.ndarray | None, targets: list[Target],
                 method: str):
        super().__init__(image, segments)
        self.targets = list(targets)
        self.method = method
        self.saliency: dict[int, np.ndarray] = {}
        self.saliency_raw: dict[int, np.ndarray] = {}
        self.stop_reasons: dict[int, str] = {}
        self.num_forwards = 0
        self.task = "detection"
        self.mask_seed = None  # D-RISE: the seed its masks were drawn with (drise_masks)

    @classmethod
    def wrap(cls, inner: ImageExplanation, targets: list[Target],
             method: str) -> DetectionExplanation:
        """The classifier explanation ``inner`` of the target scores, as a detection one (its
        attributes, KernelSHAP's ``base_value`` and ``exact`` included, carried over)."""
        out = cls(inner.image, inner.segments, targets, method)
        for name, value in vars(inner).items():
            if name not in ("targets", "method"):
                setattr(out, name, value)
        out.saliency, out.saliency_raw, out.num_forwards = {}, {}, 0
        out.stop_reasons = {i: inner.stop_reason for i in range(len(targets))}
        return out

    def _check_target(self, i) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < len(self.targets):
            raise KeyError(f"target {i!r} was not explained; targets 0..{len(self.targets) - 1}")
        return int(i)

    def render(self, label=None, *, box_colour="yellow", opacity=0.5, **kwargs):
        """Target ``label``'s picture: its superpixel weights (LIME, KernelSHAP; ``kwargs`` as
        for ``ImageExplanation.render``) or its D-RISE map over the image, with its box drawn.

        Args:
            label: the target's index (default 0).
            box_colour: colour of the box's outline.
            opacity: the D-RISE map's weight against the image.

        Returns:
            (H, W, 3) uint8 array (a PIL image with ``as_pil=True``).
        """
        from PIL import Image

        from limefast.viz.render import cam_overlay

        i = self._check_target(0 if label is None else label)
        as_pil = kwargs.pop("as_pil", False)
        if self.method == "drise":
            picture = cam_overlay(self.image, self.saliency[i], opacity)
        else:
            picture = super().render(i, **kwargs)
        picture = draw_box(picture, self.targets[i].box, box_colour)
        return Image.fromarray(picture) if as_pil else picture

    def get_image_and_mask(self, label, *args, **kwargs):
        """As ``ImageExplanation.get_image_and_mask`` for target ``label`` (LIME, KernelSHAP)."""
        if self.method == "drise":
            raise ValueError("get_image_and_mask shows superpixels: a D-RISE explanation has a "
                             "pixel map instead, in saliency[i] (or render(i))")
        return super().get_image_and_mask(self._check_target(label), *args, **kwargs)

    def panel(self, *, tile: int = 160, as_pil: bool = True, label_name=None):
        """One tile per target: its box and its weights or map, titled with its class and
        score (``label_name(label)``: the class's name; default ``class N``)."""
        from limefast.viz.panel import panel

        name = label_name or (lambda label: f"class {label}")
        tiles = [(f"#{i} {name(t.label)} ({t.score:.2f})" + (
            ", flat" if self.stop_reasons.get(i) == "flat" else ""), self.render(i))
            for i, t in enumerate(self.targets)]
        return panel(tiles, tile=tile, as_pil=as_pil,
                     header=f"{self.method}: {len(self.targets)} "
                            f"target{'s' if len(self.targets) != 1 else ''}")

    def _repr_png_(self):
        from limefast.viz.panel import png_bytes

        return png_bytes(self.panel())

    def record(self, *, image=None, model: str = "", seed=None, seconds: float = 0.0) -> dict:
        """A JSON-ready record shaped like ``explanation.json`` (``limefast.core.record``):
        ``labels`` keyed by the target's index, each with its box, class and score."""
        targets = {}
        for i, t in enumerate(self.targets):
            entry = {"box": [float(v) for v in t.box], "class": int(t.label),
                     "score": number(t.score), "given": bool(t.given),
                     "stop_reason": self.stop_reasons.get(i, self.stop_reason)}
            if t.region is not None:
                entry["region_pixels"] = int(np.count_nonzero(t.region))
            if self.method == "drise":
                entry["saliency_shape"] = list(self.saliency[i].shape)
            else:
                entry.update({
                    "intercept": number(self.intercept[i]),
                    "score_fit": number(self.score[i]),
                    "weights": [[int(f), number(w)] for f, w in self.local_exp[i]],
                    "stderr": [[int(f), number(self.stderr[i].get(f))]
                               for f, _ in self.local_exp[i]],
                    "expected_overlap": number(self.expected_overlap.get(i)),
                })
                if self.method == "kernelshap":
                    entry["base_value"] = number(self.base_value[i])
            targets[str(i)] = entry
        return {
            "image": image, "method": self.method, "task": self.task, "model": model,
            "size": list(self.image.shape[:2]),
            "n_superpixels": None if self.segments is None else int(self.segments.max()) + 1,
            "num_samples": int(self.num_samples), "num_evaluated": int(self.num_evaluated),
            "num_forwards": int(self.num_forwards),
            "converged": bool(self.converged), "stop_reason": self.stop_reason, "seed": seed,
            "labels": targets, "seconds": seconds,
            **({"mask_seed": self.mask_seed} if self.method == "drise" else {}),
        }


def draw_box(picture: np.ndarray, box, colour="yellow", width: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 ``picture`` with ``box`` (x1, y1, x2, y2) outlined."""
    from PIL import Image, ImageDraw

    from limefast.viz.render import colour as rgb
    from limefast.viz.render import to_rgb8

    img = Image.fromarray(to_rgb8(picture))
    x1, y1, x2, y2 = (float(v) for v in box)
    ImageDraw.Draw(img).rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)],
                                  outline=rgb(colour), width=width)
    return np.asarray(img).copy()
