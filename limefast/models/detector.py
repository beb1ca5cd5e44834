"""A small object detector on generated scenes: a detector to explain, trained here in seconds.

Each 48x48 RGB uint8 scene holds one to three shapes (disc, square, triangle) of random bright
colours and sizes, apart from each other, on a textured background with pixel noise; each shape
has its box (x1, y1, x2, y2 in pixels) and class. The data are generated from a seed, so nothing
is downloaded.

The model is CenterNet-shaped (Zhou et al., "Objects as Points", 2019) at toy scale: four 3x3
convolutions (two of stride 2, the last dilated; 8, 16, 16, 24 channels, about 1 M
multiply-adds an image) down to a 12x12 grid (one cell per 4x4 pixels), then a 1x1 head with,
per cell, a centre heatmap for each class, the box's width and height, and the centre's offset
in the cell.
``ShapesDetector`` decodes it into the detector protocol's dicts (local maxima of the heatmap;
``class_probs`` are the classes' heat at the peak, normalised). The trained weights (about
30 KB) ship beside this file and are cached like the other models' when trained again.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limefast.optional import require

torch = require("torch", "limefast.models.detector")
nn = torch.nn

from limefast.device._torch import torch_threads  # noqa: E402 - after torch
from limefast.models.cache import cache_dir, cached_model  # noqa: E402
from limefast.models.digits import to_tensor  # noqa: E402

SIZE = 48
STRIDE = 4
GRID = SIZE // STRIDE
CLASSES = ("disc", "square", "triangle")
RADIUS = (5.0, 10.0)  # a shape's half-size in pixels
# Bump when the data, the architecture or the training change: old checkpoints are then ignored.
MODEL_VERSION = 2
EPOCHS = 10
BATCH = 32
LR = 4e-3
FILE_NAME = f"shapes-detector-v{MODEL_VERSION}.pt"
PACKAGED = Path(__file__).with_name(FILE_NAME)


def layout(rng: np.random.RandomState, count: int, size: int = SIZE):
    """``count`` shapes' (centre y, centre x, half-size), inside the image and apart."""
    shapes: list[tuple[float, float, float]] = []
    while len(shapes) < count:
        r = rng.uniform(*RADIUS)
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        if all(max(abs(cy - y), abs(cx - x)) >= r + s + 2 for y, x, s in shapes):
            shapes.append((cy, cx, r))
    return shapes


def draw_scene(rng: np.random.RandomState, size: int = SIZE):
    """One scene: (size, size, 3) uint8 image, (K, 4) float boxes and (K,) int classes."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    background = rng.uniform(0, 100, 3)
    texture = 18 * np.sin(xx / rng.uniform(2, 6) + yy / rng.uniform(3, 9)
                          + rng.uniform(0, 6))[..., None]
    image = background + texture + rng.normal(0, 10, (size, size, 3))
    boxes, labels = [], []
    for cy, cx, r in layout(rng, rng.randint(1, 4), size):
        label = rng.randint(len(CLASSES))
        dy, dx = (yy - cy) / r, (xx - cx) / r
        if label == 0:
            mask = dy ** 2 + dx ** 2 <= 1
        elif label == 1:
            mask = (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85)
        else:
            mask = (dy <= 0.9) & (dy >= 2 * np.abs(dx) - 1.1)
        image[mask] = rng.uniform(140, 255, 3) + rng.normal(0, 8, (int(mask.sum()), 3))
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    return (np.clip(image, 0, 255).astype(np.uint8), np.array(boxes, dtype=np.float64),
            np.array(labels, dtype=np.int64))


@dataclass
class Scenes:
    """Generated scenes: (N, H, W, 3) uint8 images, per image boxes (K, 4) and classes (K,)."""

    images: np.ndarray
    boxes: list
    labels: list


def load_scenes(n: int = 1600, seed: int = 0) -> Scenes:
    """``n`` generated scenes (seeded)."""
    rng = np.random.RandomState(seed)
    drawn = [draw_scene(rng) for _ in range(n)]
    return Scenes(np.stack([d[0] for d in drawn]), [d[1] for d in drawn], [d[2] for d in drawn])


class ShapesDetectorNet(nn.Module):
    """(N, 3, 48, 48) float in [0, 1] -> (N, 3 + 4, 12, 12): class heat logits, then width and
    height (in image sizes) and the centre's offset in its cell (in cells)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=2, dilation=2), nn.ReLU())
        self.head = nn.Conv2d(24, len(CLASSES) + 4, 1)
        with torch.no_grad():  # CenterNet's prior: few cells hold a centre
            self.head.bias[:len(CLASSES)].fill_(-2.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _targets(scenes: Scenes):
    """Heatmaps (N, C, G, G) with a Gaussian at each centre, and per centre cell the size and
    offset to learn, with a mask of the centre cells."""
    n, c = len(scenes.boxes), len(CLASSES)
    heat = np.zeros((n, c, GRID, GRID), np.float32)
    reg = np.zeros((n, 4, GRID, GRID), np.float32)
    mask = np.zeros((n, GRID, GRID), np.float32)
    gy, gx = np.mgrid[:GRID, :GRID]
    for i, (boxes, labels) in enumerate(zip(scenes.boxes, scenes.labels)):
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ix, iy = min(int(cx), GRID - 1), min(int(cy), GRID - 1)
            sigma = max(0.5, (x2 - x1) / STRIDE / 6)
            g = np.exp(-((gx - ix) ** 2 + (gy - iy) ** 2) / (2 * sigma ** 2))
            heat[i, label] = np.maximum(heat[i, label], g)
            reg[i, :, iy, ix] = ((x2 - x1) / SIZE, (y2 - y1) / SIZE, cx - ix, cy - iy)
            mask[i, iy, ix] = 1
    return torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(mask)


def loss_fn(out: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heat, plus L1 on the centres' sizes and
    offsets."""
    c = len(CLASSES)
    p = torch.sigmoid(out[:, :c]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    focal = -(pos * (1 - p) ** 2 * torch.log(p)
              + (1 - pos) * (1 - heat) ** 4 * p ** 2 * torch.log(1 - p)).sum()
    n_pos = pos.sum().clamp(min=1)
    l1 = ((out[:, c:] - reg).abs() * mask[:, None]).sum()
    return focal / n_pos + 2.0 * l1 / n_pos


def train_model(scenes: Scenes | None = None, seed: int = 0,
                epochs: int = EPOCHS) -> ShapesDetectorNet:
    """Train a ShapesDetectorNet (Adam, seeded shuffles, one thread: the same weights every
    run)."""
    scenes = load_scenes() if scenes is None else scenes
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    heat, reg, mask = _targets(scenes)
    with torch_threads(1):
        model = ShapesDetectorNet()
        x = to_tensor(scenes.images)
        optimiser = torch.optim.Adam(model.parameters(), lr=LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, LR, total_steps=epochs * -(-len(x) // BATCH))
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=generator).split(BATCH):
                optimiser.zero_grad()
                loss_fn(model(x[idx]), heat[idx], reg[idx], mask[idx]).backward()
                optimiser.step()
                schedule.step()
    return model.eval()


class ShapesDetector:
    """The trained net as a detector of the protocol: (N, 48, 48, 3) uint8 -> N dicts with
    ``boxes`` (x1, y1, x2, y2 pixels), ``scores``, ``labels`` and ``class_probs``.

    Args:
        model: a ShapesDetectorNet.
        min_score: heat below this is no detection.
        max_detections: the most detections per image.
        threads: torch's threads for a forward (one by default: a net this small loses more
            to OpenMP's wake-ups than it gains, and on a busy CPU it loses much more).
    """

    def __init__(self, model: nn.Module, min_score: float = 0.05, max_detections: int = 10,
                 threads: int | None = 1):
        self.model = model.eval()
        self.min_score = min_score
        self.max_detections = max_detections
        self.threads = threads

    def raw(self, images: np.ndarray) -> torch.Tensor:
        """The net's (N, 7, 12, 12) output."""
        shape = np.shape(images)
        if len(shape) != 4 or shape[1:] != (SIZE, SIZE, 3):
            raise ValueError(f"the shapes detector takes (N, {SIZE}, {SIZE}, 3) images; got "
                             f"shape {shape}")
        with torch.inference_mode():
            if self.threads is None:
                return self.model(to_tensor(images))
            with torch_threads(self.threads):
                return self.model(to_tensor(images))

    def __call__(self, images: np.ndarray) -> list[dict]:
        if self.threads is None:
            return decode(self.raw(images), self.min_score, self.max_detections)
        with torch_threads(self.threads):
            return decode(self.raw(images), self.min_score, self.max_detections)


def decode(out: torch.Tensor, min_score: float, max_detections: int) -> list[dict]:
    """(N, 7, G, G) outputs -> N detection dicts (3x3 local maxima of the heat, best first)."""
    c = len(CLASSES)
    heat = torch.sigmoid(out[:, :c])
    # the 3x3 maximum (max_pool2d(heat, 3, 1, 1)) from nine shifted views: torch's CPU
    # max_pool2d costs milliseconds on these small maps
    padded = nn.functional.pad(heat, (1, 1, 1, 1), value=float("-inf"))
    g = heat.shape[-1]
    local = padded[..., :g, :g]
    for dy in range(3):
        for dx in range(3):
            local = torch.maximum(local, padded[..., dy:dy + g, dx:dx + g])
    peaks = heat * (heat == local)
    n = heat.shape[0]
    k = min(max_detections, peaks[0].numel())
    scores, index = peaks.reshape(n, -1).topk(k)
    labels = index // (GRID * GRID)
    cell = index % (GRID * GRID)
    iy, ix = cell // GRID, cell % GRID
    rows = torch.arange(n)[:, None]
    reg = out[:, c:].permute(0, 2, 3, 1)[rows, iy, ix]  # (n, k, 4)
    cx = (ix + reg[..., 2]) * STRIDE
    cy = (iy + reg[..., 3]) * STRIDE
    w, h = reg[..., 0].clamp(min=0) * SIZE, reg[..., 1].clamp(min=0) * SIZE
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    boxes = boxes.clamp(0, SIZE)
    probs = heat.permute(0, 2, 3, 1)[rows, iy, ix]  # (n, k, C)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-12)
    # topk sorts by decreasing score: the detections kept are a prefix of each row
    kept = (scores >= min_score).sum(1).tolist()
    boxes, scores, labels, probs = (t.numpy().astype(np.float64 if t.is_floating_point()
                                                     else np.int64)
                                    for t in (boxes, scores, labels, probs))
    return [{"boxes": boxes[i, :c], "scores": scores[i, :c], "labels": labels[i, :c],
             "class_probs": probs[i, :c]} for i, c in enumerate(kept)]


@dataclass
class TrainedDetector:
    """The detector, where its weights came from, and its recall on held-out scenes."""

    detector: ShapesDetector
    path: Path | None
    trained: bool
    recall: float
    seconds: float


def recall(detector: ShapesDetector, scenes: Scenes, iou: float = 0.5,
           threshold: float = 0.3) -> float:
    """Share of the scenes' boxes found with the right class, IoU >= ``iou`` and score >=
    ``threshold``."""
    from limefast.detection.protocol import box_iou

    hits = total = 0
    for found, boxes, labels in zip(detector(scenes.images), scenes.boxes, scenes.labels):
        ok = found["scores"] >= threshold
        overlap = box_iou(boxes, found["boxes"][ok])
        same = labels[:, None] == found["labels"][ok][None, :]
        hits += int(((overlap >= iou) & same).any(axis=1).sum())
        total += len(boxes)
    return hits / max(total, 1)


def load_model(*, cache: bool = True, retrain: bool = False) -> TrainedDetector:
    """The trained shapes detector: the checkpoint shipped beside this module, else the cached
    one, else trained now (and cached).

    Args:
        cache: read and write the cached state dict under ``cache_dir()``.
        retrain: train even if a checkpoint exists (and overwrite the cached one).
    """
    t0 = time.perf_counter()
    model = None
    if PACKAGED.is_file() and not retrain:
        model, path, trained = ShapesDetectorNet(), PACKAGED, False
        try:
            model.load_state_dict(torch.load(PACKAGED, map_location="cpu", weights_only=True))
            model.eval()
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways
            warnings.warn(f"ignoring unreadable shipped checkpoint {PACKAGED}: {exc}",
                          stacklevel=2)
            model = None
    if model is None:  # trained (or cached) in the cache folder, never into the package
        path = cache_dir() / FILE_NAME if cache else None
        model, trained = cached_model(path, ShapesDetectorNet, train_model, "shapes detector",
                                      retrain)
    detector = ShapesDetector(model)
    return TrainedDetector(detector, path, trained, recall(detector, load_scenes(200, seed=1)),
                           time.perf_counter() - t0)
