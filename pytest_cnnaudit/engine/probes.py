"""Deterministic probe images, generated lazily one batch at a time.

Why lazy: activation statistics are streamed per batch so that memory does not
grow with the probe set; materialising every probe image up front would undo
that (1024 images at 224x224 are 600 MB of float32).

Every image is a pure function of (source, seed, index): crops and flips are
drawn from ``numpy.random.default_rng([seed, index])`` (PCG64, identical on
every platform), and the shipped photographs are lossless PNGs, so the same
configuration yields the same pixels on every run and machine.

A team's own images (a folder, or a ``.npy`` array) are used as they are when there are
enough of them: each once, resized so that the short side fits and centre-cropped to the
input's aspect ratio, as typical preprocessing does. Seeded crops (``probe.augment: crops``)
remain the default for the four shipped photographs and when ``count`` exceeds the images.

Images leave this module as float32 RGB in [0, 1], shape (N, H, W, 3);
:func:`to_model_input` turns them into what a model expects. The main pass takes them from
:func:`prefetched_batches`: decoded and resized on a thread pool while the model runs the
batches before them (a folder of tens of thousands of photographs is only as fast as its
slowest stage), the same pixels in the same order as :meth:`ProbeSet.batches`.
"""

from __future__ import annotations

import colorsys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Decode one image file to float32 RGB in [0, 1]; a bad file names itself.

    16-bit images are scaled by 65535 (Pillow would clip them to white when converting to
    8-bit RGB); a palette or an alpha channel is converted as usual.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode.startswith("I") or image.mode == "F":
                return _wide_gray(np.asarray(image), image.mode, path)
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ProbeError(f"probe image {path} is not a readable image: {exc}") from None


def _wide_gray(pixels: np.ndarray, mode: str, path: Path | str) -> np.ndarray:
    """A 16-bit (``I;16``, or ``I`` within 0..65535) or float (``F``, within [0, 1]) grayscale image as RGB."""
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if mode == "F":
        if not (np.isfinite(pixels).all() and low >= 0.0 and high <= 1.0):
            raise ProbeError(f"probe image {path}: float pixels range {low:g} .. {high:g}, expected within [0, 1]")
        gray = pixels.astype(np.float32)
    else:
        if low < 0 or high > 65535:
            raise ProbeError(
                f"probe image {path}: integer pixels range {low:g} .. {high:g}, expected 16-bit (0 .. 65535)"
            )
        gray = pixels.astype(np.float32) / 65535.0
    return np.repeat(gray[..., None], 3, axis=-1)


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


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to cover ``size`` (the side that fits last decides the scale), then cropped to it
    in the centre: torchvision's ``Resize`` then ``CenterCrop``, as a model's own preprocessing does."""
    height, width = image.shape[:2]
    scale = max(size[0] / height, size[1] / width)
    covering = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    resized = image if covering == (height, width) else _resize(image, covering)
    top, left = round((covering[0] - size[0]) / 2), round((covering[1] - size[1]) / 2)
    return resized[top : top + size[0], left : left + size[1]]


@dataclass(frozen=True)
class ProbeSet:
    """A deterministic, lazily generated sequence of probe images.

    ``sources`` are the base images (paths or shipped photo names; empty for a ``.npy``
    array, whose rows are the base images). With ``crops``, image ``index`` is a seeded crop
    of base image ``index % available``; without, it is base image ``order[index]`` as it is,
    resized and centre-cropped to ``size``.
    """

    description: str
    size: tuple[int, int]
    count: int
    seed: int
    sources: tuple[str, ...]
    npy_path: str | None = None
    crops: bool = True
    order: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.count

    def _base(self, number: int) -> np.ndarray:
        if self.npy_path is not None:
            array = np.load(self.npy_path, mmap_mode="r", allow_pickle=False)
            return npy_pixels(array, number)
        source = self.sources[number]
        return _shipped_photo(source) if source in SHIPPED_PHOTOS else _read_rgb(source)

    def image(self, index: int) -> np.ndarray:
        if not self.crops:
            return centre_crop(self._base(self.order[index]), self.size).astype(np.float32)
        available = len(self.sources) or _npy_length(self.npy_path)
        rng = np.random.default_rng([self.seed, index])
        return seeded_crop(self._base(index % available), self.size, rng)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield (n, H, W, 3) float32 RGB batches; only one batch lives at a time."""
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            yield np.stack([self.image(i) for i in range(start, stop)])


#: Batches decoded ahead of the one the model runs: what overlaps inference, and all that waits in memory.
PREFETCH_BATCHES = 2
#: Decoding threads: Pillow releases the GIL while it decodes and resamples, numpy in most of the rest.
PREFETCH_WORKERS = 2


def prefetched_batches(
    probes: ProbeSet,
    batch_size: int,
    spec: InputSpec,
    twins: frozenset[int] = frozenset(),
    ahead: int = PREFETCH_BATCHES,
    workers: int = PREFETCH_WORKERS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The model input of each of :meth:`ProbeSet.batches` (:func:`to_model_input` for ``spec``), and that of
    the achromatic twins (:func:`grayscale`) of its images listed in ``twins``, in index order (none: 0 rows).

    Each image is made and turned into model input on a thread pool up to ``ahead`` batches before it
    is used. Every image is a pure function of its index and its input an elementwise function of
    the image, so the threads' order changes nothing: the same bits as one :func:`to_model_input` of
    each batch. At most ``ahead + 2`` batches exist at a time, as model input only (no image is kept);
    a failing image (an unreadable file) raises when its batch is taken.
    """
    starts = iter(range(0, probes.count, batch_size))
    pending: deque[list[Future[tuple[np.ndarray, np.ndarray | None]]]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="cnnaudit-probes")

    def prepared(index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image = probes.image(index)[None]
        twin = to_model_input(grayscale(image), spec)[0] if index in twins else None
        return to_model_input(image, spec)[0], twin

    def submit_next() -> None:
        start = next(starts, None)
        if start is not None:
            stop = min(start + batch_size, probes.count)
            pending.append([pool.submit(prepared, index) for index in range(start, stop)])

    try:
        for _ in range(ahead + 1):
            submit_next()
        while pending:
            futures = pending.popleft()
            submit_next()
            inputs, gray = zip(*(future.result() for future in futures))
            twin_inputs = [twin for twin in gray if twin is not None]
            empty = np.empty((0, *inputs[0].shape), np.float32)
            yield np.stack(inputs), np.stack(twin_inputs) if twin_inputs else empty
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def npy_pixels(array: np.ndarray, number: int) -> np.ndarray:
    """Row ``number`` of a probe array as float32 RGB in [0, 1]: 8-bit integers (and floats above 1) are
    0-255, 16-bit ones 0-65535, whatever one image's brightness."""
    image = np.asarray(array[number], dtype=np.float32)
    if array.dtype.itemsize == 2 and np.issubdtype(array.dtype, np.integer):
        return image / 65535.0
    if np.issubdtype(array.dtype, np.integer) or image.max(initial=0.0) > 1.0:
        return image / 255.0
    return image


def _npy_length(path: str | None) -> int:
    return int(np.load(str(path), mmap_mode="r", allow_pickle=False).shape[0])


def default_probe_set(size: tuple[int, int], count: int = 32, seed: int = 0) -> ProbeSet:
    """Seeded crops and flips of the shipped photographs: needs no download."""
    return ProbeSet(
        description=f"shipped photographs ({len(SHIPPED_PHOTOS)}), {count} seeded crops",
        size=size,
        count=count,
        seed=seed,
        sources=SHIPPED_PHOTOS,
    )


def user_probe_set(
    images: Path, size: tuple[int, int], count: int | None, seed: int, augment: str | None = None
) -> ProbeSet:
    """The user's own probe images: a folder of image files, or an (N, H, W, 3) ``.npy`` array.

    ``count`` None: every image. Unless ``augment`` is ``crops``, each image is used once, as it
    is (a seeded choice of ``count`` of them when there are more); when ``count`` exceeds the
    images, seeded crops are drawn, or, under ``augment: none``, that is an error.
    """
    if not images.exists():
        raise ProbeError(f"probe.images: {images} does not exist")
    files: tuple[str, ...] = ()
    npy_path = None
    if images.is_file():
        available = _checked_npy(images)
        npy_path = str(images)
    else:
        files = image_files(images)
        available = len(files)
    count = available if count is None else count
    crops = augment == "crops" or (augment is None and count > available)
    if augment == "none" and count > available:
        raise ProbeError(
            f"probe.images: {images} holds {available} images, fewer than probe.count {count}; lower the count, "
            "or set probe.augment: crops to draw seeded crops"
        )
    if crops:
        description = f"{images} ({available} images), {count} seeded crops"
        return ProbeSet(description, size, count, seed, files, npy_path)
    chosen = range(available) if count == available else np.random.default_rng(seed).choice(available, count, False)
    order = tuple(sorted(int(number) for number in chosen))
    which = "each" if count == available else f"{count} of them (seeded choice), each"
    description = f"{images} ({available} images), {which} once, resized and centre-cropped"
    return ProbeSet(description, size, count, seed, files, npy_path, crops=False, order=order)


def _checked_npy(path: Path) -> int:
    """The number of images in a probe ``.npy``: (N, H, W, 3) with N >= 1, every pixel finite."""
    if path.suffix != ".npy":
        raise ProbeError(f"probe.images: {path} is neither a folder nor a .npy array")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ProbeError(f"probe.images: {path} is not a readable .npy array: {exc}") from None
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ProbeError(f"probe.images: {path} has shape {array.shape}, expected (N, H, W, 3) RGB")
    if array.shape[0] == 0 or 0 in array.shape[1:3]:
        raise ProbeError(f"probe.images: {path} has shape {array.shape}: it holds no image")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ProbeError(f"probe.images: {path} holds {array.dtype} values, expected integer or float pixels")
    if np.issubdtype(array.dtype, np.floating):
        for number in range(array.shape[0]):  # one image at a time: the array may be larger than memory
            if not np.isfinite(array[number]).all():
                raise ProbeError(f"probe.images: {path}: image {number} has NaN or infinite pixels")
    return int(array.shape[0])


def image_files(folder: Path) -> tuple[str, ...]:
    """The image files of a probe folder, sorted; an empty folder is an error."""
    files = tuple(sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise ProbeError(f"probe.images: {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def check_probe_source(images: Path, count: int | None = None, augment: str | None = None) -> None:
    """Validate the user's probe images before any model loads: the set can be built (existence, folder
    contents, the ``.npy``'s shape and pixels, enough images for ``augment: none``) and every file decodes."""
    probes = user_probe_set(images, (1, 1), count, 0, augment)
    used = range(min(probes.count, len(probes.sources))) if probes.crops else probes.order
    for number in used if probes.sources else ():
        try:
            _read_rgb(probes.sources[number])
        except ProbeError as exc:
            raise ProbeError(f"probe.images: {exc}") from None


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
    mean/std (given in the model's channel order, on its scale) and layout. A signal or clip
    model's probes (:mod:`.signals`) are model input already: passed through."""
    if spec.shape is not None:
        return np.ascontiguousarray(images, dtype=np.float32)
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
