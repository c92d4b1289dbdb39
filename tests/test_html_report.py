"""What people look at: the HTML report, pictures in pytest-html, progress lines (run as users run them)."""

from __future__ import annotations

import base64
import io
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from modelbuilders import save, two_conv_model
from PIL import Image

pytest_plugins = ["pytester"]

#: Isolation is not what the page's tests are about (the progress test keeps it: it reads the child's messages).
STRICT = "runtime: {isolate: false}\nchecks:\n  dead_filters: {max_count: 0}\n"
#: Enough probe images for the measurement to count as long, so its progress is shown.
MANY_PROBES = "probe: {count: 256, batch_size: 64}\n"


class Page(HTMLParser):
    """The parts of the report a test looks at: model and check sections, images, table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[str] = []
        self.checks: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.first_row_class: dict[str, str] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section" and "data-model" in attributes:
            self.models.append(attributes["data-model"] or "")
            self.checks[self.models[-1]] = []
        if tag == "section" and "data-check" in attributes:
            self.checks[self.models[-1]].append(attributes["data-check"] or "")
        if tag == "tr" and attributes.get("class") and self.models[-1] not in self.first_row_class:
            self.first_row_class[self.models[-1]] = attributes["class"] or ""
        if tag == "img":
            self.images.append(attributes["src"] or "")
        if tag in ("script", "link") or any((v or "").startswith(("http:", "https:")) for v in attributes.values()):
            self.external.append(tag)


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    image.load()
    return image


@pytest.fixture
def models(pytester: pytest.Pytester) -> None:
    save(two_conv_model(), pytester.path / "healthy.onnx")
    save(two_conv_model(dead_conv2=(1, 4)), pytester.path / "planted.onnx")  # fails dead_filters[conv2]


def test_html_report_has_a_section_per_model_and_check_and_every_image_decodes(
    pytester: pytest.Pytester, models: None
) -> None:
    pytester.makefile(".yaml", cnnaudit=STRICT)
    # Under xdist the pictures travel from the measuring child through a worker to the controller.
    args = ("--cnnaudit", "healthy.onnx", "planted.onnx", "--cnnaudit-html", "report.html", "--cnnaudit-json", "r.json")
    result = pytester.runpytest(*args, "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(["cnnaudit: HTML report written to report.html"])
    page = Page()
    page.feed((pytester.path / "report.html").read_text(encoding="utf-8"))
    assert page.models == ["planted.onnx", "healthy.onnx"]  # models with a failure first
    for model in page.models:
        assert page.checks[model] == ["sparsity", "dead_filters", "color"]
    assert page.first_row_class["planted.onnx"] == "failed"  # failures first in the verdict table
    # per model: sparsity and dead charts, probe image, two layers' maps, filters, colour profile; and for
    # planted.onnx's dead channels, the chart of their evidence
    assert len(page.images) == 2 * 7 + 1
    assert all(decode_png(src).size[0] > 50 for src in page.images)
    assert page.external == []
    assert "pictures" not in (pytester.path / "r.json").read_text()  # the JSON report stays small
    pytester.runpytest("--cnnaudit", "healthy.onnx", "planted.onnx", "--cnnaudit-html", "serial.html", "-p", "no:xdist")
    assert (pytester.path / "serial.html").read_bytes() == (pytester.path / "report.html").read_bytes()


def test_failed_item_carries_its_picture_in_pytest_html(pytester: pytest.Pytester, models: None) -> None:
    pytest.importorskip("pytest_html")
    pytester.makefile(".yaml", cnnaudit=STRICT)
    recorder = pytester.inline_run("--cnnaudit", "planted.onnx", "--html", "page.html", "-p", "no:xdist")
    reports = {r.nodeid.split("::")[-1]: r for r in recorder.getreports("pytest_runtest_logreport") if r.when == "call"}
    failed = reports["dead_filters[conv2]"]
    assert failed.failed
    (extra,) = failed.extras
    assert extra["format_type"] == "image" and extra["mime_type"] == "image/png"
    with Image.open(pytester.path / extra["content"]) as picture:  # pytest-html wrote it beside page.html
        assert picture.format == "PNG" and picture.size[0] > 100
    assert all(not getattr(r, "extras", []) for name, r in reports.items() if name != "dead_filters[conv2]")


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "-q"])
def test_progress_lines_show_for_a_long_measurement_unless_quiet(pytester: pytest.Pytester, quiet: bool) -> None:
    save(two_conv_model(), pytester.path / "healthy.onnx")
    pytester.makefile(".yaml", cnnaudit=MANY_PROBES)
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", *(["-q"] if quiet else []))
    result.assert_outcomes(passed=5)
    if quiet:
        assert "probe images (" not in result.stdout.str()
    else:
        result.stdout.fnmatch_lines(["cnnaudit: healthy.onnx: 64/256 probe images (*s)"])
        result.stdout.fnmatch_lines(["cnnaudit: healthy.onnx: 256/256 probe images (*s)"])


def test_html_without_matplotlib_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    save(two_conv_model(), pytester.path / "healthy.onnx")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what find_spec reports for a missing package
    result = pytester.runpytest("--cnnaudit", "healthy.onnx", "--cnnaudit-html", "report.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cnnaudit-html needs matplotlib: pip install 'pytest-cnnaudit[report]'" in result.stderr.str()
    assert not Path(pytester.path / "report.html").exists()
