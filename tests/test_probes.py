"""Probe images: deterministic, in range, streamed; user images; preprocessing into model input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_cnnaudit.config import InputSpec
from pytest_cnnaudit.engine.probes import (
    LUMA,
    SHIPPED_PHOTOS,
    ProbeSet,
    default_probe_set,
    grayscale,
    pattern_probes,
    to_model_input,
    user_probe_set,
)
from pytest_cnnaudit.errors import ProbeError

SIZE = (24, 40)


def all_images(probes: ProbeSet, batch_size: int = 5) -> np.ndarray:
    return np.concatenate(list(probes.batches(batch_size)))


# --------------------------------------------------------------------------- the default probe set


def test_default_probe_set_shape_range_and_dtype() -> None:
    images = all_images(default_probe_set(SIZE, count=12, seed=0))
    assert images.shape == (12, *SIZE, 3)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.05  # photographs, not a flat field


def test_same_seed_same_pixels() -> None:
    first = all_images(default_probe_set(SIZE, count=10, seed=7))
    second = all_images(default_probe_set(SIZE, count=10, seed=7), batch_size=3)
    np.testing.assert_array_equal(first, second)


def test_different_seed_different_pixels() -> None:
    seed0 = all_images(default_probe_set(SIZE, count=8, seed=0))
    seed1 = all_images(default_probe_set(SIZE, count=8, seed=1))
    assert not np.array_equal(seed0, seed1)
    differing = [i for i in range(8) if not np.array_equal(seed0[i], seed1[i])]
    assert len(differing) >= 6  # crops differ image by image, not just somewhere


def test_images_are_distinct_crops_of_every_photo() -> None:
    probes = default_probe_set(SIZE, count=2 * len(SHIPPED_PHOTOS), seed=0)
    images = all_images(probes)
    assert len({image.tobytes() for image in images}) == len(images)
    assert probes.sources == SHIPPED_PHOTOS
    assert str(len(SHIPPED_PHOTOS)) in probes.description


def test_image_depends_only_on_its_index() -> None:
    """A longer probe set starts with the same images: counts can grow without reshuffling."""
    short = all_images(default_probe_set(SIZE, count=5, seed=3))
    long = all_images(default_probe_set(SIZE, count=9, seed=3))
    np.testing.assert_array_equal(short, long[:5])
    np.testing.assert_array_equal(default_probe_set(SIZE, count=9, seed=3).image(6), long[6])


# --------------------------------------------------------------------------- streaming


def test_batches_have_the_requested_sizes() -> None:
    probes = default_probe_set(SIZE, count=10, seed=0)
    assert [len(batch) for batch in probes.batches(4)] == [4, 4, 2]
    assert [len(batch) for batch in probes.batches(16)] == [10]
    assert len(probes) == 10


def test_batches_are_made_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = default_probe_set(SIZE, count=10, seed=0)
    made: list[int] = []
    original = ProbeSet.image

    def counting_image(self: ProbeSet, index: int) -> np.ndarray:
        made.append(index)
        return original(self, index)

    monkeypatch.setattr(ProbeSet, "image", counting_image)
    batches = probes.batches(3)
    assert made == []
    next(batches)
    assert made == [0, 1, 2]
    next(batches)
    assert made == [0, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- the user's probe images


def write_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three 32x48 PNGs in a folder (one in a subfolder), plus a file that is not an image."""
    folder = tmp_path / "probes"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.PNG", "more/c.png"):
        write_png(folder / name, rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_user_folder(image_folder: Path) -> None:
    probes = user_probe_set(image_folder, SIZE, None, seed=0)
    assert probes.count == 3
    assert [Path(s).name for s in probes.sources] == ["a.png", "b.PNG", "c.png"]
    images = all_images(probes)
    assert images.shape == (3, *SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, all_images(user_probe_set(image_folder, SIZE, None, seed=0)))


def test_user_folder_count_cycles_through_the_images(image_folder: Path) -> None:
    probes = user_probe_set(image_folder, SIZE, 7, seed=0)
    assert probes.count == 7
    assert all_images(probes).shape == (7, *SIZE, 3)


def test_user_folder_crop_of_an_exact_size_image_is_the_image_or_its_mirror(tmp_path: Path) -> None:
    """With a crop scale below 1 the crop is resized; pixel values stay the file's, scaled to [0, 1]."""
    rgb = np.zeros((SIZE[0], SIZE[1], 3), np.uint8)
    rgb[..., 0] = 255
    write_png(tmp_path / "red.png", rgb)
    images = all_images(user_probe_set(tmp_path, SIZE, 4, seed=0))
    np.testing.assert_allclose(images[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(images[..., 1:], 0.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_user_npy_array(dtype: type, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (5, *SIZE, 3)).astype(np.uint8)
    array = pixels if dtype is np.uint8 else (pixels / 255.0).astype(np.float32)
    np.save(tmp_path / "probes.npy", array)
    probes = user_probe_set(tmp_path / "probes.npy", SIZE, None, seed=0)
    assert probes.count == 5
    images = all_images(probes, batch_size=2)
    np.testing.assert_allclose(images, pixels / 255.0, atol=1e-6)
    fewer = user_probe_set(tmp_path / "probes.npy", SIZE, 3, seed=0)
    assert fewer.count == 3 and not fewer.crops and len(set(fewer.order)) == 3  # three of the five, each once
    more = user_probe_set(tmp_path / "probes.npy", SIZE, 50, seed=0)
    assert more.count == 50 and more.crops  # more than the array holds: seeded crops of its images


def test_user_npy_uint8_dark_image_is_still_0_to_255(tmp_path: Path) -> None:
    """A near-black uint8 image (pixel values 0 and 1) means 1/255, not full white."""
    pixels = np.zeros((2, *SIZE, 3), np.uint8)
    pixels[0] = 200
    pixels[1, ::2] = 1
    np.save(tmp_path / "probes.npy", pixels)
    images = all_images(user_probe_set(tmp_path / "probes.npy", SIZE, None, seed=0))
    np.testing.assert_allclose(images, pixels / 255.0, atol=1e-6)


def test_user_npy_array_is_resized(tmp_path: Path) -> None:
    np.save(tmp_path / "probes.npy", np.full((2, 10, 10, 3), 0.25, np.float32))
    images = all_images(user_probe_set(tmp_path / "probes.npy", SIZE, None, seed=0))
    assert images.shape == (2, *SIZE, 3)
    np.testing.assert_allclose(images, 0.25, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no image files"),
        (lambda p: (p / "x.png").write_bytes(b"png?") and p / "x.png", "neither a folder nor a .npy"),
        (lambda p: np.save(p / "gray.npy", np.zeros((2, 8, 8))) or p / "gray.npy", "expected (N, H, W, 3)"),
        (lambda p: (p / "bad.npy").write_bytes(b"not numpy") and p / "bad.npy", "not a readable .npy"),
    ],
    ids=["missing", "empty-folder", "single-image-file", "wrong-shape", "corrupt-npy"],
)
def test_user_probe_errors(make: Callable[[Path], Path], fragment: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(ProbeError) as info:
        user_probe_set(path, SIZE, None, seed=0)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_unreadable_image_names_itself(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    probes = user_probe_set(tmp_path, SIZE, None, seed=0)
    with pytest.raises(ProbeError, match=r"broken\.png"):
        all_images(probes)


def fitted(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image as torchvision's Resize + CenterCrop preprocess it, done here with Pillow on 8-bit RGB."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    scale = max(size[0] / rgb.height, size[1] / rgb.width)
    width, height = max(size[1], round(rgb.width * scale)), max(size[0], round(rgb.height * scale))
    resized = rgb.resize((width, height), Image.BILINEAR)
    top, left = round((height - size[0]) / 2), round((width - size[1]) / 2)
    return np.asarray(resized.crop((left, top, left + size[1], top + size[0])), dtype=np.float64) / 255.0


def test_user_folder_images_are_used_once_each_as_they_are(tmp_path: Path) -> None:
    """Before, a folder's images were seeded random crops (50-100% of the short side, mirrored)."""
    rng = np.random.default_rng(2)
    # Smooth gradients (a crop and a resize of noise would not agree to the pixel) of two aspect ratios.
    ramp = np.linspace(0, 255, 48)[None, :, None] * np.linspace(0.2, 1, 36)[:, None, None]
    write_png(tmp_path / "wide.png", np.broadcast_to(ramp, (36, 48, 3)).astype(np.uint8))
    write_png(tmp_path / "tall.png", np.broadcast_to(ramp.transpose(1, 0, 2), (48, 36, 3)).astype(np.uint8))
    write_png(tmp_path / "exact.png", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    probes = user_probe_set(tmp_path, SIZE, None, seed=0)
    assert not probes.crops and probes.order == (0, 1, 2)
    assert "each once, resized and centre-cropped" in probes.description
    images = all_images(probes)
    for image, source in zip(images, probes.sources):
        np.testing.assert_allclose(image, fitted(Path(source), SIZE), atol=2.5 / 255)
    with Image.open(tmp_path / "exact.png") as exact:  # an image at the input size is used pixel for pixel
        np.testing.assert_array_equal(images[0], np.asarray(exact, dtype=np.float32) / 255.0)


def test_user_folder_with_more_images_than_count_uses_a_seeded_choice_once_each(tmp_path: Path) -> None:
    for index in range(10):
        write_png(tmp_path / f"{index}.png", np.full((*SIZE, 3), index * 20, np.uint8))
    probes = user_probe_set(tmp_path, SIZE, 4, seed=3)
    assert not probes.crops and len(set(probes.order)) == 4 and list(probes.order) == sorted(probes.order)
    assert "4 of them (seeded choice), each once" in probes.description
    values = sorted(round(float(image[0, 0, 0]) * 255) for image in all_images(probes))
    assert values == sorted(20 * number for number in probes.order)
    assert user_probe_set(tmp_path, SIZE, 4, seed=3).order == probes.order
    assert user_probe_set(tmp_path, SIZE, 4, seed=4).order != probes.order


def test_user_images_are_cropped_when_count_exceeds_them_or_when_asked(image_folder: Path) -> None:
    assert user_probe_set(image_folder, SIZE, 7, seed=0).crops  # 7 images of 3 files: seeded crops
    asked = user_probe_set(image_folder, SIZE, 3, seed=0, augment="crops")
    assert asked.crops and "3 seeded crops" in asked.description
    np.testing.assert_array_equal(all_images(asked), all_images(user_probe_set(image_folder, SIZE, 7, seed=0))[:3])
    with pytest.raises(ProbeError) as info:
        user_probe_set(image_folder, SIZE, 7, seed=0, augment="none")
    assert str(info.value) == (
        f"probe.images: {image_folder} holds 3 images, fewer than probe.count 7; lower the count, "
        "or set probe.augment: crops to draw seeded crops"
    )


def test_sixteen_bit_grayscale_png_is_read_in_its_range(tmp_path: Path) -> None:
    """Pillow converts a 16-bit PNG to 8-bit RGB by clipping: it was read as white (99.7% of pixels 1.0)."""
    pixels = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) * 60).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "depth16.png")
    image = all_images(user_probe_set(tmp_path, SIZE, None, seed=0))[0]
    for channel in range(3):
        np.testing.assert_allclose(image[..., channel], pixels / 65535.0, atol=1e-6)


def test_palette_png_is_read_in_its_colours(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30]], np.uint8)
    indices = np.random.default_rng(0).integers(0, 3, SIZE).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "palette.png")
    np.testing.assert_allclose(all_images(user_probe_set(tmp_path, SIZE, None, seed=0))[0], palette[indices] / 255.0)


def test_float_image_out_of_range_is_refused_with_its_file_named(tmp_path: Path) -> None:
    Image.fromarray(np.full(SIZE, 3.5, np.float32)).save(tmp_path / "hdr.tiff")
    with pytest.raises(ProbeError) as info:
        all_images(user_probe_set(tmp_path, SIZE, None, seed=0))
    assert (
        str(info.value) == f"probe image {tmp_path / 'hdr.tiff'}: float pixels range 3.5 .. 3.5, expected within [0, 1]"
    )


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 8, 8, 3), np.uint8), "probe.images: {path} has shape (0, 8, 8, 3): it holds no image"),
        (
            np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), np.nan)]),
            "probe.images: {path}: image 1 has NaN or infinite pixels",
        ),
        (np.full((1, 8, 8, 3), np.inf, np.float32), "probe.images: {path}: image 0 has NaN or infinite pixels"),
        (np.zeros((2, 8, 8, 3), bool), "probe.images: {path} holds bool values, expected integer or float pixels"),
    ],
    ids=["no-image", "nan", "inf", "bool"],
)
def test_unusable_npy_is_refused_with_its_file_named(tmp_path: Path, array: np.ndarray, message: str) -> None:
    """Before, 0 images failed as a runtime crash and NaN pixels were blamed on the model's output."""
    path = tmp_path / "probes.npy"
    np.save(path, array)
    with pytest.raises(ProbeError) as info:
        user_probe_set(path, SIZE, None, seed=0)
    assert str(info.value) == message.format(path=path)


def test_sixteen_bit_npy_is_scaled_by_65535(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 65536, (2, *SIZE, 3)).astype(np.uint16)
    np.save(tmp_path / "probes.npy", pixels)
    np.testing.assert_allclose(
        all_images(user_probe_set(tmp_path / "probes.npy", SIZE, None, seed=0)), pixels / 65535.0, atol=1e-6
    )


# --------------------------------------------------------------------------- preprocessing


def spec(**fields: object) -> InputSpec:
    defaults = {"size": (2, 3), "layout": "NCHW", "channels": "RGB", "scale": 1}
    defaults |= fields
    channels = 1 if defaults["channels"] == "GRAY" else 3
    defaults.setdefault("mean", (0.0,) * channels)
    defaults.setdefault("std", (1.0,) * channels)
    return InputSpec(**defaults)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (2, 2, 3, 3)).astype(np.float32)


def test_rgb_nchw(rgb: np.ndarray) -> None:
    out = to_model_input(rgb, spec())
    assert out.shape == (2, 3, 2, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(out[:, channel], rgb[..., channel])


def test_bgr_nhwc(rgb: np.ndarray) -> None:
    out = to_model_input(rgb, spec(layout="NHWC", channels="BGR"))
    assert out.shape == (2, 2, 3, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[..., 0], rgb[..., 2])
    np.testing.assert_array_equal(out[..., 1], rgb[..., 1])
    np.testing.assert_array_equal(out[..., 2], rgb[..., 0])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_gray_is_luma(rgb: np.ndarray, layout: str) -> None:
    out = to_model_input(rgb, spec(layout=layout, channels="GRAY"))
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    if layout == "NCHW":
        assert out.shape == (2, 1, 2, 3)
        np.testing.assert_allclose(out[:, 0], luma, rtol=1e-6)
    else:
        assert out.shape == (2, 2, 3, 1)
        np.testing.assert_allclose(out[..., 0], luma, rtol=1e-6)


def test_scale_255_then_mean_std_in_model_channel_order(rgb: np.ndarray) -> None:
    """mean/std are given in the model's channel order (BGR here) and on its scale (0-255)."""
    mean, std = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
    out = to_model_input(rgb, spec(layout="NHWC", channels="BGR", scale=255, mean=mean, std=std))
    bgr = rgb[..., ::-1].astype(np.float64) * 255
    expected = (bgr - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_imagenet_normalisation_nchw(rgb: np.ndarray) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = to_model_input(rgb, spec(mean=mean, std=std))
    for channel in range(3):
        expected = (rgb[..., channel].astype(np.float64) - mean[channel]) / std[channel]
        np.testing.assert_allclose(out[:, channel], expected, rtol=1e-5, atol=1e-6)


def test_to_model_input_does_not_modify_the_images(rgb: np.ndarray) -> None:
    before = rgb.copy()
    to_model_input(rgb, spec(channels="BGR", scale=255, mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0)))
    np.testing.assert_array_equal(rgb, before)


# --------------------------------------------------------------------------- colour patterns


def test_pattern_probes_names_and_shapes() -> None:
    images, names = pattern_probes((16, 32), hues=6)
    assert images.shape == (8, 16, 32, 3) and images.dtype == np.float32
    assert len(names) == 8 and len(set(names)) == 8
    assert names[-2:] == ("achromatic_grating", "isoluminant_grating")
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_hue_fields_are_uniform_and_saturated() -> None:
    images, _ = pattern_probes((8, 8), hues=8)
    fields = images[:8]
    assert all(np.ptp(field.reshape(-1, 3), axis=0).max() == 0 for field in fields)
    colours = fields[:, 0, 0]
    assert np.allclose(colours.max(axis=1), 1.0) and np.allclose(colours.min(axis=1), 0.0)
    assert len({tuple(c) for c in colours.round(4)}) == 8


def test_achromatic_grating_is_gray_bars() -> None:
    images, names = pattern_probes((8, 32))
    grating = images[names.index("achromatic_grating")]
    np.testing.assert_array_equal(grating[..., 0], grating[..., 1])
    np.testing.assert_array_equal(grating[..., 1], grating[..., 2])
    assert len(np.unique(grating)) == 2


def test_isoluminant_grating_has_equal_luma_and_two_colours() -> None:
    images, names = pattern_probes((8, 32))
    grating = images[names.index("isoluminant_grating")]
    colours = np.unique(grating.reshape(-1, 3), axis=0)
    assert len(colours) == 2
    luma = colours.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert luma[0] == pytest.approx(luma[1], abs=1e-6)
    assert np.abs(colours[0] - colours[1]).max() > 0.3  # a real chromatic contrast
    # Both bars appear, in alternation along the width, and each column is one colour.
    assert (grating == grating[:1]).all()
    first_row = grating[0]
    assert not (first_row == first_row[:1]).all()
    np.testing.assert_allclose(grayscale(grating[None])[0], luma[0], atol=1e-6)


def test_grayscale_keeps_luma() -> None:
    images = np.random.default_rng(0).uniform(0, 1, (3, 4, 5, 3)).astype(np.float32)
    gray = grayscale(images)
    assert gray.shape == images.shape
    np.testing.assert_allclose(gray @ LUMA, images @ LUMA, rtol=1e-5)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
