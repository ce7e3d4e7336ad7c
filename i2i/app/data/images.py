"""Product photos for the fashion-notes dataset: Fashion-MNIST when installed, drawn shapes otherwise.

Fashion-MNIST ships in Debian's ``dataset-fashion-mnist`` package. Colour is applied as a tint,
so an image shows both the garment's category and its colour: information a short note's text
does not carry.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LOG = logging.getLogger(__name__)
FASHION_MNIST_DIRS = [
    Path(os.environ.get("I2I_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")),
]
IMAGE_SIZE = 64


@dataclass
class ImageSource:
    """Grayscale 28x28 images grouped by Fashion-MNIST label (0..9)."""

    by_label: list[np.ndarray]
    real: bool  # False when drawn shapes stand in for the photos

    def pick(self, label: int, rng: np.random.Generator) -> np.ndarray:
        images = self.by_label[label]
        return images[rng.integers(len(images))]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist() -> ImageSource | None:
    for directory in FASHION_MNIST_DIRS:
        images_path = directory / "train-images-idx3-ubyte.gz"
        labels_path = directory / "train-labels-idx1-ubyte.gz"
        if images_path.exists() and labels_path.exists():
            images, labels = _read_idx(images_path), _read_idx(labels_path)
            return ImageSource([images[labels == label] for label in range(10)], real=True)
    return None


def drawn_images(rng: np.random.Generator, per_label: int = 50) -> ImageSource:
    """Simple silhouettes per category with jitter: a stand-in that still lets images tell categories apart."""
    shapes = {
        0: [(6, 6, 22, 22), (2, 6, 8, 12), (20, 6, 26, 12)],  # t-shirt: body and short sleeves
        1: [(8, 4, 13, 26), (15, 4, 20, 26), (8, 4, 20, 8)],  # trousers: two legs
        2: [(6, 6, 22, 22), (1, 6, 7, 22), (21, 6, 27, 22)],  # pullover: long sleeves
        3: [(10, 3, 18, 10), (6, 10, 22, 26)],  # dress
        4: [(6, 4, 22, 26), (1, 4, 7, 24), (21, 4, 27, 24)],  # coat
        5: [(4, 18, 24, 22), (8, 14, 10, 18), (16, 14, 18, 18)],  # sandal: sole and straps
        6: [(7, 5, 21, 23), (2, 5, 8, 20), (20, 5, 26, 20), (12, 5, 16, 9)],  # shirt with collar
        7: [(3, 14, 25, 21), (10, 10, 20, 14)],  # sneaker
        8: [(5, 10, 23, 24), (10, 4, 18, 10)],  # bag with handle
        9: [(6, 4, 14, 22), (6, 17, 24, 23)],  # ankle boot
    }
    by_label = []
    for label in range(10):
        batch = []
        for _ in range(per_label):
            canvas = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(canvas)
            dx, dy = rng.integers(-2, 3, size=2)
            for x0, y0, x1, y1 in shapes[label]:
                draw.rectangle((x0 + dx, y0 + dy, x1 + dx, y1 + dy), fill=int(rng.integers(150, 256)))
            noise = rng.normal(0, 12, (28, 28))
            batch.append(np.clip(np.asarray(canvas, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
        by_label.append(np.stack(batch))
    return ImageSource(by_label, real=False)


def image_source(rng: np.random.Generator) -> ImageSource:
    source = load_fashion_mnist()
    if source is None:
        LOG.warning(
            "Fashion-MNIST not found in %s (install Debian's dataset-fashion-mnist); using drawn images",
            ", ".join(map(str, FASHION_MNIST_DIRS)),
        )
        source = drawn_images(rng)
    return source


def tinted_png(gray: np.ndarray, rgb: tuple[int, int, int], size: int = IMAGE_SIZE) -> bytes:
    """The garment (bright pixels) in ``rgb`` on a light background, upscaled, as PNG bytes."""
    alpha = gray.astype(np.float32)[..., None] / 255.0
    background = np.full((*gray.shape, 3), 245.0, dtype=np.float32)
    colour = np.asarray(rgb, dtype=np.float32)[None, None, :]
    shade = 0.55 + 0.45 * alpha  # keep texture: darker folds, brighter highlights
    pixels = background * (1 - alpha) + colour * shade * alpha
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def augmented_photos(base: np.ndarray, rgb: np.ndarray, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Photos of products, each its own shot: ``base`` (n, 28, 28) grayscale garments tinted with ``rgb`` (n, 3).

    Every photo gets its own random crop and scale, horizontal flip, small rotation, tint and
    lighting jitter and a light background colour, all drawn from ``rng`` and applied to the whole
    batch at once (one inverse affine map per photo, bilinear sampling). Returns uint8 (n, size, size, 3).
    """
    n = len(base)
    f32 = np.float32
    angle = np.deg2rad(rng.uniform(-12, 12, n)).astype(f32)
    scale = rng.uniform(0.8, 1.15, n).astype(f32)  # > 1 zooms in (a crop), < 1 leaves a margin
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(f32)
    shift = rng.uniform(-0.12, 0.12, (n, 2)).astype(f32)
    # output pixel centres in [-1, 1], mapped back into the source photo
    grid = (np.arange(size, dtype=f32) + f32(0.5)) / f32(size) * f32(2) - f32(1)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
    src = base.shape[1]
    half = f32(src / 2)
    sx = (flip[:, None, None] * (cos * gx - sin * gy) + shift[:, 0, None, None] + 1) * half - f32(0.5)
    sy = (sin * gx + cos * gy + shift[:, 1, None, None] + 1) * half - f32(0.5)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    width = src + 2
    # one zero pixel of border all round: samples outside the photo read background
    flat = np.pad(base.astype(f32) / f32(255), ((0, 0), (1, 1), (1, 1))).reshape(-1)
    xi = np.clip(x0.astype(np.int32) + 1, 0, src)
    yi = np.clip(y0.astype(np.int32) + 1, 0, src)
    index = yi * width + xi + (np.arange(n, dtype=np.int32) * width * width)[:, None, None]
    top = flat[index] * (1 - fx) + flat[index + 1] * fx
    bottom = flat[index + width] * (1 - fx) + flat[index + width + 1] * fx
    alpha = (top * (1 - fy) + bottom * fy)[..., None]
    tint = np.clip(rgb.astype(f32) + rng.normal(0, 12, (n, 3)).astype(f32), 0, 255)[:, None, None, :]
    light = rng.uniform(0.85, 1.15, n).astype(f32)[:, None, None, None]
    background = rng.uniform(225, 252, (n, 3)).astype(f32)[:, None, None, :]
    shade = f32(0.55) + f32(0.45) * alpha  # keep texture: darker folds, brighter highlights
    pixels = (background * (1 - alpha) + tint * shade * alpha) * light
    return np.clip(pixels, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """One (h, w, 3) uint8 photo as PNG bytes (fast compression: sizes matter less than speed here)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
