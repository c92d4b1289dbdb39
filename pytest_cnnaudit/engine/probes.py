"""Deterministic probe images, generated lazily one batch at a time.

Why lazy: activation statistics are streamed per batch so that memory does not
grow with the probe set; materialising every probe image up front would undo
that (1024 images at 224x224 are 600 MB of float32).

Every image is a pure function of (source, seed, index): crops and flips are
drawn from ``numpy.random.default_rng([seed, index])`` (PCG64, identical on
every platform), and the shipped photographs are lossless PNGs, so the same
configuration yields the same pixels on every run and machine.

Images leave this module as float32 RGB in [0, 1], shape (N, H, W, 3);
:func:`to_model_input` turns them into what a model expects.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProbeError

if TYPE_CHECKING:
    from ..config.model import InputSpec

#: Photographs shipped in ``pytest_cnnaudit/data/photos`` (scikit-image sample
#: data; licences in README.md): NASA (public domain), CC0, CC0, SpaceX (public domain).
SHIPPED_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Rec. 601 luma weights: the luminance an achromatic (gray) version keeps.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _read_rgb(path: Path | str) -> np.ndarray:
    """Decode one image file to float32 RGB in [0, 1]; a bad file names itself."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ProbeError(f"probe image {path} cannot be read: {exc}") from None


@cache
def _shipped_photo(name: str) -> np.ndarray:
    ref = resources.files("pytest_cnnaudit") / "data" / "photos" / name
    with resources.as_file(ref) as path:
        return _read_rgb(path)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    channels = [
        np.asarray(Image.fromarray(image[..., c], mode="F").resize((width, height), Image.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def seeded_crop(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop (50-100% of the short side, aspect of ``size``), maybe mirrored, resized."""
    height, width = image.shape[:2]
    aspect = size[1] / size[0]
    scale = rng.uniform(0.5, 1.0)
    crop_h = max(1, int(round(min(height, width / aspect) * scale)))
    crop_w = max(1, min(width, int(round(crop_h * aspect))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = image[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), size)


@dataclass(frozen=True)
class ProbeSet:
    """A deterministic, lazily generated sequence of probe images.

    ``sources`` are the base images (paths or shipped photo names); image
    ``index`` is a seeded crop of ``sources[index % len(sources)]``, except for
    ``.npy`` sources, whose images are used as they are (resized if needed).
    """

    description: str
    size: tuple[int, int]
    count: int
    seed: int
    sources: tuple[str, ...]
    npy_path: str | None = None

    def __len__(self) -> int:
        return self.count

    def image(self, index: int) -> np.ndarray:
        if self.npy_path is not None:
            array = np.load(self.npy_path, mmap_mode="r", allow_pickle=False)
            image = np.asarray(array[index], dtype=np.float32)
            # Integer arrays are 0-255 whatever one image's brightness; floats above 1 are too.
            if np.issubdtype(array.dtype, np.integer) or image.max(initial=0.0) > 1.0:
                image = image / 255.0
            if image.shape[:2] != self.size:
                image = _resize(image, self.size)
            return image.astype(np.float32)
        source = self.sources[index % len(self.sources)]
        base = _shipped_photo(source) if source in SHIPPED_PHOTOS else _read_rgb(source)
        rng = np.random.default_rng([self.seed, index])
        return seeded_crop(base, self.size, rng)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield (n, H, W, 3) float32 RGB batches; only one batch lives at a time."""
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            yield np.stack([self.image(i) for i in range(start, stop)])


def default_probe_set(size: tuple[int, int], count: int = 32, seed: int = 0) -> ProbeSet:
    """Seeded crops and flips of the shipped photographs: needs no download."""
    return ProbeSet(
        description=f"shipped photographs ({len(SHIPPED_PHOTOS)}), {count} seeded crops",
        size=size,
        count=count,
        seed=seed,
        sources=SHIPPED_PHOTOS,
    )


def user_probe_set(images: Path, size: tuple[int, int], count: int | None, seed: int) -> ProbeSet:
    """The user's own probe images: a folder of image files, or an (N, H, W, 3) ``.npy`` array."""
    if not images.exists():
        raise ProbeError(f"probe.images: {images} does not exist")
    if images.is_file():
        if images.suffix != ".npy":
            raise ProbeError(f"probe.images: {images} is neither a folder nor a .npy array")
        try:
            array = np.load(images, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ProbeError(f"probe.images: {images} is not a readable .npy array: {exc}") from None
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ProbeError(f"probe.images: {images} has shape {array.shape}, expected (N, H, W, 3) RGB")
        available = int(array.shape[0])
        return ProbeSet(
            f"{images} ({available} images)", size, min(count or available, available), seed, (), str(images)
        )
    files = image_files(images)
    return ProbeSet(f"{images} ({len(files)} images), seeded crops", size, count or len(files), seed, tuple(files))


def image_files(folder: Path) -> tuple[str, ...]:
    """The image files of a probe folder, sorted; an empty folder is an error."""
    files = tuple(sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise ProbeError(f"probe.images: {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def check_probe_source(images: Path) -> None:
    """Validate the user's probe images before any model loads: every file's header must decode."""
    from PIL import Image, UnidentifiedImageError

    user_probe_set(images, (1, 1), None, 0)  # existence, folder contents, .npy shape
    if images.is_dir():
        for name in image_files(images):
            try:
                with Image.open(name) as image:
                    image.verify()
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                raise ProbeError(f"probe.images: {name} is not a readable image: {exc}") from None


def pattern_probes(size: tuple[int, int], hues: int = 8) -> tuple[np.ndarray, tuple[str, ...]]:
    """Data-free colour patterns: uniform hue fields, achromatic and isoluminant gratings.

    The isoluminant grating alternates red-ish and green-ish bars of equal luma,
    so a purely luminance-driven filter sees a uniform field in it.
    """
    height, width = size
    names: list[str] = []
    images: list[np.ndarray] = []
    for k in range(hues):
        rgb = np.array(colorsys.hsv_to_rgb(k / hues, 1.0, 1.0), dtype=np.float32)
        images.append(np.broadcast_to(rgb, (height, width, 3)).copy())
        names.append(f"hue_field_{int(360 * k / hues)}deg")
    bars = (np.arange(width) // max(1, width // 8)) % 2 == 0
    achromatic = np.where(bars, 0.8, 0.2).astype(np.float32)
    images.append(np.broadcast_to(achromatic[None, :, None], (height, width, 3)).copy())
    names.append("achromatic_grating")
    red = np.array([0.8, 0.2, 0.5], dtype=np.float32)
    green = red.copy()
    green[0], green[1] = 0.2, 0.2 + (0.8 - 0.2) * LUMA[0] / LUMA[1]  # equal luma to ``red``
    grating = np.where(bars[None, :, None], red, green).astype(np.float32)
    images.append(np.broadcast_to(grating, (height, width, 3)).copy())
    names.append("isoluminant_grating")
    return np.stack(images), tuple(names)


def grayscale(images: np.ndarray) -> np.ndarray:
    """Each pixel replaced by its luminance on all three channels (the achromatic twin)."""
    luma = images @ LUMA
    return np.repeat(luma[..., None], 3, axis=-1).astype(np.float32)


def to_model_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Turn (N, H, W, 3) RGB in [0, 1] into the model's input: channel order, scale,
    mean/std (given in the model's channel order, on its scale) and layout."""
    if spec.channels == "GRAY":
        pixels = (images @ LUMA)[..., None]
    elif spec.channels == "BGR":
        pixels = images[..., ::-1]
    else:
        pixels = images
    pixels = pixels * np.float32(spec.scale)
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(pixels, dtype=np.float32)
