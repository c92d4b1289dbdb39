"""Cost of an audit next to a bare inference of the same probe images: the figures issue 15 targets.

This is the driver. Every measurement is one run of ``bench_workers.py`` (its docstring describes each
kind) in a fresh interpreter, so that its peak memory is its own; this process never imports torch or
onnxruntime. Models are torchvision's with seeded random weights, exported once to ONNX into ``--cache``
(the ``export`` kind). Runs that are compared are interleaved (bare, audit, bare, audit, ...) so that a
burst of other load hits both alike, and every figure is the lowest of ``--repeat`` runs, each figure on
its own: wall seconds and CPU seconds (other load only slows a run down) and peak RSS (VmHWM;
onnxruntime's arena moves a run's peak by tens of MB either way, and the lowest repeats best).

What each number means (``bare``: onnxruntime on the audit's own probe images, decoded the audit's way,
same batch size; both times include opening the model or session and making the probe input):

- ``main``: ``audit`` (sparsity and dead filters, colour off) vs ``bare`` for each of ``--models``
  (default resnet50), ``--images`` (256) in batches of ``--batch-size`` (32). time = audit s / bare s
  (target for resnet50: at most 1.25x), CPU time = the same of CPU seconds (all threads), memory =
  audit peak MB / bare peak MB (target for resnet50: at most 1.5x).
- ``default``: ``audit-default`` (the default checks: the colour profile on) vs ``bare``; targets at
  most 1.5x for resnet50 and 2.0x for mobilenet_v3_small (default models: those two).
- ``memory``: the audit's peak MB at few and at many probe images (``--streaming``, default 64 and
  1024) on ``--streaming-model`` (default resnet18), beside bare inference's at the same counts and
  the audit's own share (audit - bare); target: many / few at most 1.05. Then bare and
  audit peak MB (and seconds) at each of ``--memory-batches`` (8, 32, 64) at ``--images``.
- ``torch``: ``torch-audit`` (colour off) vs ``torch-bare`` (the module under ``no_grad``), resnet18.
- ``folder`` (with ``--folder``): ``audit`` vs ``bare`` on a folder of images (the same decoding in
  both), resnet18; throughput = audit images/s / bare images/s (target: at least 0.9x).
- ``fixed``: costs paid once per run, apart from the per-image cost: ``load`` (opening the model:
  parse, shape inference, graph walk, then its session and one image), ``child`` (starting one
  isolation child; CPU seconds are the parent's only), ``pytest-empty`` (``pytest`` with the plugin
  and nothing to collect) and a whole ``pytest --cnnaudit`` run (default checks; CPU seconds and peak
  of the pytest process tree). Per image: (seconds - fixed part) / images, the fixed part being bare's
  session creation and the audit's ``load`` run.
- ``gpu`` (with ``--gpu``): ``gpu-audit`` (default checks, ``runtime.device: cuda``) vs ``gpu-bare``; the
  row names the provider that bare inference got, so a fall back to the CPU shows.

Run: ``python benchmarks/bench_audit.py [--quick]``; ``--help`` lists the options. One measurement
is ``python benchmarks/bench_workers.py KIND MODEL IMAGES BATCH CACHE [FOLDER]``, which is what this
runs and what to hand to ``python -m cProfile``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_workers import onnx_path  # the worker module imports no third-party package at its top

WORKERS = Path(__file__).with_name("bench_workers.py")
SECTIONS = ("main", "default", "memory", "torch", "folder", "fixed", "gpu")
TORCH_MODEL = FOLDER_MODEL = "resnet18"
#: Issue 15's targets (at 256 images in batches of 32): audit over bare.
MAIN_TARGETS = {"resnet50": (1.25, 1.5)}  # time, peak memory
DEFAULT_TARGETS = {"resnet50": 1.5, "mobilenet_v3_small": 2.0}  # time
STREAMING_LIMIT = 1.05  # peak memory at many probe images over few
FOLDER_LIMIT = 0.9  # images per second, audit over bare
#: The figures of a worker's answer that are measurements; each is the lowest over the repeats.
MEASURED = ("seconds", "cpu_seconds", "peak_mb", "child_peak_mb", "open_seconds")
VERSIONS = ("onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "numpy", "Pillow", "pytest")


@dataclass(frozen=True)
class Run:
    """One worker command line."""

    kind: str
    model: str
    images: int
    batch: int
    folder: str | None = None

    def label(self) -> str:
        return f"{self.kind} {self.model} {self.images} images, batch {self.batch}" + (
            f", {self.folder}" if self.folder else ""
        )


def lowest(results: list[dict]) -> dict:
    """The first run's answer with each measured figure at its lowest over all runs."""
    best = dict(results[0])
    for figure in MEASURED:
        if figure in best:
            best[figure] = min(result[figure] for result in results)
    return best


class Bench:
    """Runs workers, and keeps the lowest figures of each run so that sections can share them."""

    def __init__(self, cache: Path, repeat: int) -> None:
        self.cache, self.repeat = cache, repeat
        self.measured: dict[Run, dict] = {}

    def once(self, run: Run) -> dict:
        """One measurement in a fresh interpreter."""
        command = [sys.executable, str(WORKERS), run.kind, run.model, str(run.images), str(run.batch), str(self.cache)]
        done = subprocess.run([*command, *([run.folder] if run.folder else [])], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{run.label()} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peak = result.get("child_peak_mb", result["peak_mb"])
        timing = f"{result['seconds']:7.2f} s (cpu {result['cpu_seconds']:7.2f} s)" if "seconds" in result else ""
        print(f"  {run.label():48} {timing}, peak {peak:6.0f} MB", file=sys.stderr, flush=True)
        return result

    def compare(self, *runs: Run) -> list[dict]:
        """The lowest figures of each run, measuring those not yet measured, interleaved, ``repeat`` times."""
        todo = [run for run in dict.fromkeys(runs) if run not in self.measured]
        results: dict[Run, list[dict]] = {run: [] for run in todo}
        for _ in range(self.repeat):
            for run in todo:
                results[run].append(self.once(run))
        self.measured.update({run: lowest(done) for run, done in results.items()})
        return [self.measured[run] for run in runs]

    def export(self, models: list[str]) -> None:
        for model in dict.fromkeys(models):
            if not onnx_path(model, self.cache).exists():
                self.once(Run("export", model, 1, 1))


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def batch_label(batch: int, audit: dict) -> str:
    """The batch size, and the audit's own where its memory budget shrank it."""
    used = audit.get("batch_size", batch)
    return str(batch) if used == batch else f"{batch} (audit {used})"


AUDIT_COLUMNS = (
    "run",
    "model",
    "images",
    "batch",
    "bare s",
    "audit s",
    "time",
    "CPU time",
    "bare MB",
    "audit MB",
    "memory",
    "target",
    "met",
)


def audit_row(label: str, run: Run, bare: dict, audit: dict, target: tuple[str, bool] | None) -> list[str]:
    """A row of the audit table; ``target``: its text, and whether it was met."""
    return [
        label,
        run.model,
        str(run.images),
        batch_label(run.batch, audit),
        f"{bare['seconds']:.2f}",
        f"{audit['seconds']:.2f}",
        ratio(audit["seconds"] / bare["seconds"]),
        ratio(audit["cpu_seconds"] / bare["cpu_seconds"]),
        f"{bare['peak_mb']:.0f}",
        f"{audit['peak_mb']:.0f}",
        ratio(audit["peak_mb"] / bare["peak_mb"]),
        target[0] if target else "-",
        met(target[1]) if target else "-",
    ]


def main_target(model: str, bare: dict, audit: dict) -> tuple[str, bool] | None:
    if model not in MAIN_TARGETS:
        return None
    time_limit, memory_limit = MAIN_TARGETS[model]
    ok = audit["seconds"] <= time_limit * bare["seconds"] and audit["peak_mb"] <= memory_limit * bare["peak_mb"]
    return f"time <= {ratio(time_limit)}, memory <= {ratio(memory_limit)}", ok


def default_target(model: str, bare: dict, audit: dict) -> tuple[str, bool] | None:
    if model not in DEFAULT_TARGETS:
        return None
    limit = DEFAULT_TARGETS[model]
    return f"time <= {ratio(limit)}", audit["seconds"] <= limit * bare["seconds"]


def onnx_rows(bench: Bench, args: argparse.Namespace) -> list[list[str]]:
    """The main and default-checks rows; a model in both shares its bare runs, all three kinds interleaved."""
    main = args.models if "main" in args.only else []
    default = args.default_models if "default" in args.only else []
    rows = []
    for model in dict.fromkeys(main + default):
        kinds = ["audit"] * (model in main) + ["audit-default"] * (model in default)
        runs = [Run(kind, model, args.images, args.batch_size) for kind in ["bare", *kinds]]
        bare, *audits = bench.compare(*runs)
        for run, audit in zip(runs[1:], audits):
            if run.kind == "audit":
                target = main_target(model, bare, audit)
                rows.append(audit_row("onnx, sparsity + dead filters", run, bare, audit, target))
            else:
                rows.append(audit_row("onnx, default checks", run, bare, audit, default_target(model, bare, audit)))
    return rows


def torch_row(bench: Bench, args: argparse.Namespace) -> list[str]:
    runs = [Run(kind, TORCH_MODEL, args.images, args.batch_size) for kind in ("torch-bare", "torch-audit")]
    return audit_row("torch, sparsity + dead filters", runs[1], *bench.compare(*runs), None)


def gpu_rows(bench: Bench, args: argparse.Namespace) -> list[list[str]]:
    """The default checks on CUDA; the run column names the provider bare inference got (CPU when CUDA is absent)."""
    rows = []
    for model in args.models:
        runs = [Run(kind, model, args.images, args.batch_size) for kind in ("gpu-bare", "gpu-audit")]
        bare, audit = bench.compare(*runs)
        rows.append(audit_row(f"{bare['provider']}, default checks", runs[1], bare, audit, None))
    return rows


def streaming_table(bench: Bench, args: argparse.Namespace) -> str:
    """The audit's peak at few and many probe images, beside bare inference's: onnxruntime and the
    allocator warm up over the first batches in both, so the audit's own share (audit - bare) is what
    shows whether anything of the audit grows with the probe set."""
    model, batch = args.streaming_model, args.batch_size
    few, many = (Run("audit", model, n, batch) for n in args.streaming)
    bare_few, bare_many = (Run("bare", model, n, batch) for n in args.streaming)
    at_few, at_many, bare_at_few, bare_at_many = bench.compare(few, many, bare_few, bare_many)
    growth = at_many["peak_mb"] / at_few["peak_mb"]
    row = [
        model,
        batch_label(batch, at_few),
        f"{at_few['peak_mb']:.0f}",
        f"{at_many['peak_mb']:.0f}",
        ratio(growth),
        f"{bare_at_few['peak_mb']:.0f}",
        f"{bare_at_many['peak_mb']:.0f}",
        ratio(bare_at_many["peak_mb"] / bare_at_few["peak_mb"]),
        f"{at_few['peak_mb'] - bare_at_few['peak_mb']:.0f}",
        f"{at_many['peak_mb'] - bare_at_many['peak_mb']:.0f}",
        f"<= {ratio(STREAMING_LIMIT)}",
        met(growth <= STREAMING_LIMIT),
    ]
    columns = (
        "model",
        "batch",
        f"audit MB at {few.images} images",
        f"at {many.images}",
        "growth",
        f"bare MB at {few.images}",
        f"at {many.images}",
        "bare growth",
        f"audit - bare at {few.images}",
        f"at {many.images}",
        "target (growth)",
        "met",
    )
    return table(columns, [row])


def batch_table(bench: Bench, args: argparse.Namespace) -> str:
    rows = []
    for batch in args.memory_batches:
        runs = [Run(kind, args.streaming_model, args.images, batch) for kind in ("bare", "audit")]
        bare, audit = bench.compare(*runs)
        rows.append(
            [
                args.streaming_model,
                str(args.images),
                batch_label(batch, audit),
                f"{bare['peak_mb']:.0f}",
                f"{audit['peak_mb']:.0f}",
                ratio(audit["peak_mb"] / bare["peak_mb"]),
                f"{bare['seconds']:.2f}",
                f"{audit['seconds']:.2f}",
                ratio(audit["seconds"] / bare["seconds"]),
            ]
        )
    columns = ("model", "images", "batch", "bare MB", "audit MB", "memory", "bare s", "audit s", "time")
    return table(columns, rows)


def folder_table(bench: Bench, args: argparse.Namespace) -> str:
    runs = [Run(kind, FOLDER_MODEL, args.images, args.batch_size, str(args.folder)) for kind in ("bare", "audit")]
    bare, audit = bench.compare(*runs)
    throughput = bare["seconds"] / audit["seconds"]  # (images / audit s) / (images / bare s)
    row = [
        FOLDER_MODEL,
        folder_label(args.folder),
        str(args.images),
        batch_label(args.batch_size, audit),
        f"{args.images / bare['seconds']:.1f}",
        f"{args.images / audit['seconds']:.1f}",
        ratio(throughput),
        ratio(audit["cpu_seconds"] / bare["cpu_seconds"]),
        f"{bare['peak_mb']:.0f}",
        f"{audit['peak_mb']:.0f}",
        f">= {ratio(FOLDER_LIMIT)}",
        met(throughput >= FOLDER_LIMIT),
    ]
    columns = ("model", "folder", "images", "batch", "bare images/s", "audit images/s", "throughput", "CPU time")
    return table((*columns, "bare MB", "audit MB", "target", "met"), [row])


def folder_label(folder: Path) -> str:
    files = [path for path in folder.rglob("*") if path.is_file()]  # probe.images searches a folder recursively
    megabytes = sum(path.stat().st_size for path in files) / 2**20
    return f"{folder} ({len(files)} files, {megabytes:.0f} MB)"


def fixed_table(bench: Bench, args: argparse.Namespace) -> str:
    rows = []
    for model in args.models:
        load = bench.compare(Run("load", model, 1, 1))[0]
        rows.append([f"{model}: open the model, its session and one image (`load`)", *figures(load)])
        rows.append([f"{model}: of which opening (parse, shape inference, graph walk)", f"{load['open_seconds']:.2f}"])
    model = args.models[0]
    child, empty, whole = bench.compare(
        Run("child", model, 1, 1), Run("pytest-empty", model, 1, 1), Run("pytest", model, args.images, args.batch_size)
    )
    rows.append(["start one isolation child (`child`; CPU: the parent's only)", *figures(child)])
    rows.append(["`pytest` with the plugin, nothing collected (`pytest-empty`)", *figures(empty)])
    rows.append([f"`pytest --cnnaudit` {model}, default checks, {args.images} images (`pytest`)", *figures(whole)])
    return table(("fixed cost", "s", "CPU s", "peak MB"), [row + [""] * (4 - len(row)) for row in rows])


def figures(result: dict) -> list[str]:
    peak = result.get("child_peak_mb", result["peak_mb"])  # a pytest run: its process tree's, not the worker's
    return [f"{result['seconds']:.2f}", f"{result['cpu_seconds']:.2f}", f"{peak:.0f}"]


def per_image_table(bench: Bench, args: argparse.Namespace) -> str | None:
    """Per-image cost, the fixed parts taken out, of each audit measured beside its model's load run."""
    rows = []
    for model in args.models:
        load = bench.measured.get(Run("load", model, 1, 1))
        bare = bench.measured.get(Run("bare", model, args.images, args.batch_size))
        for kind in ("audit", "audit-default"):
            audit = bench.measured.get(Run(kind, model, args.images, args.batch_size))
            if load is None or bare is None or audit is None:
                continue
            bare_each = (bare["seconds"] - bare["open_seconds"]) / args.images
            audit_each = (audit["seconds"] - load["seconds"]) / args.images
            rows.append(
                [
                    model,
                    kind,
                    f"{bare['open_seconds']:.2f}",
                    f"{1000 * bare_each:.1f}",
                    f"{load['seconds']:.2f}",
                    f"{1000 * audit_each:.1f}",
                    ratio(audit_each / bare_each),
                ]
            )
    columns = ("model", "kind", "bare fixed s", "bare ms/image", "audit fixed s", "audit ms/image", "per image")
    return table(columns, rows) if rows else None


def pytest_note(bench: Bench, args: argparse.Namespace) -> str | None:
    """What a whole pytest run adds to the same audit in-process: pytest, the isolation child, the reports."""
    model = args.models[0]
    whole = bench.measured.get(Run("pytest", model, args.images, args.batch_size))
    audit = bench.measured.get(Run("audit-default", model, args.images, args.batch_size))
    if whole is None or audit is None:
        return None
    return (
        f"A whole pytest run of {model} takes {whole['seconds'] - audit['seconds']:+.2f} s over the same audit "
        f"in-process ({whole['seconds']:.2f} s vs {audit['seconds']:.2f} s): pytest, the isolation child, the reports."
    )


def machine() -> str:
    """The CPU, its cores and the versions that matter, read without importing the packages."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for package in VERSIONS:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    python = ".".join(map(str, sys.version_info[:3]))
    return f"{model}, {os.cpu_count()} cores ({usable} usable); Python {python}, " + ", ".join(versions)


def load_average() -> str:
    try:
        return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except (AttributeError, OSError):  # Windows
        return "unknown"


def make_folder(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs of mixed sizes (160 to 1600 pixels a side), the same bytes on every call."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = (int(side) for side in rng.integers(160, 1601, size=2))
        Image.fromarray(picture(rng, height, width)).save(folder / f"probe_{index:05d}.jpg", quality=90)


def picture(rng: Any, height: int, width: int) -> Any:
    """A colour gradient under smooth blobs and a fine grain: not flat, so decoding does real work."""
    import numpy as np
    from PIL import Image

    corners = rng.uniform(0, 255, (3, 3)).astype(np.float32)  # top-left, right and bottom colours
    across = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    down = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    gradient = corners[0] + (corners[1] - corners[0]) * across + (corners[2] - corners[0]) * down
    coarse = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    blobs = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    grain = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    return np.clip(0.5 * gradient + 0.5 * blobs + grain, 0, 255).astype(np.uint8)


#: The defaults that ``--quick`` changes: full run, quick run.
DEFAULTS = {
    "models": (["resnet50"], ["resnet18"]),
    "default_models": (["resnet50", "mobilenet_v3_small"], ["resnet18"]),
    "images": (256, 64),
    "repeat": (3, 1),
    "streaming": ([64, 1024], [64, 256]),
}
EPILOG = """sections (--only): main (audit vs bare, sparsity + dead filters), default (the default checks),
memory (peak memory at few and many probe images, and at each of --memory-batches), torch (resnet18),
folder (needs --folder), fixed (load, child and pytest start, a whole pytest run; per-image cost),
gpu (needs --gpu). Without --only: all of them, folder and gpu where asked for."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="resnet18 only, 64 images, 1 run, streaming 64 vs 256")
    parser.add_argument(
        "--models",
        nargs="+",
        help="torchvision models of the main, default-checks, fixed and GPU rows (default: resnet50, and "
        "resnet50 mobilenet_v3_small for the default checks)",
    )
    parser.add_argument("--images", type=int, help="probe images per run (default: 256)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--repeat", type=int, help="runs of each measurement, the lowest figures count (default: 3)")
    parser.add_argument(
        "--streaming",
        type=int,
        nargs=2,
        metavar=("FEW", "MANY"),
        help="probe counts of the streaming row (default: 64 1024)",
    )
    parser.add_argument("--streaming-model", default="resnet18", help="model of the memory section (default: resnet18)")
    parser.add_argument(
        "--memory-batches",
        type=int,
        nargs="+",
        default=[8, 32, 64],
        help="batch sizes of the memory rows (default: 8 32 64)",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help="run these sections only")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch row")
    parser.add_argument("--folder", type=Path, help="a folder of images for the folder row (resnet18)")
    parser.add_argument(
        "--make-folder",
        nargs=2,
        metavar=("PATH", "N"),
        help="write N deterministic JPEGs (160 to 1600 px a side) into PATH for --folder, and stop",
    )
    parser.add_argument("--gpu", action="store_true", help="the GPU row (onnxruntime's CUDA provider)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cnnaudit-bench",
        help="folder of the exported ONNX models (default: %(default)s)",
    )
    args = parser.parse_args()
    explicit_models = args.models  # --models sets both model lists; read before the defaults fill it
    for name, (full, quick) in DEFAULTS.items():
        given = explicit_models if name == "default_models" else getattr(args, name)
        setattr(args, name, given or (quick if args.quick else full))
    args.only = chosen_sections(parser, args)
    return args


def chosen_sections(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    if args.only:
        only = set(args.only)
    else:
        only = {section for section in SECTIONS if section not in ("folder", "gpu")}
        only |= {"folder"} if args.folder else set()
        only |= {"gpu"} if args.gpu else set()
    if args.no_torch:
        only.discard("torch")
    if "folder" in only and args.folder is None:
        parser.error("the folder section needs --folder PATH (--make-folder PATH N writes one)")
    if args.folder is not None and not args.folder.is_dir():
        parser.error(f"--folder {args.folder}: not a folder")
    if "gpu" in only and not args.gpu:
        parser.error("the gpu section needs --gpu")
    return only


def onnx_models(args: argparse.Namespace) -> list[str]:
    """The models the chosen sections run in onnxruntime, which must be exported first."""
    needed = {
        "main": args.models,
        "default": args.default_models,
        "memory": [args.streaming_model],
        "folder": [FOLDER_MODEL],
        "fixed": args.models,
        "gpu": args.models,
    }
    return [model for section in SECTIONS if section in args.only for model in needed.get(section, [])]


def main() -> None:
    args = parse_args()
    if args.make_folder:
        folder, count = Path(args.make_folder[0]), int(args.make_folder[1])
        make_folder(folder, count)
        print(f"{count} JPEGs in {folder}")
        return
    load_before = load_average()
    bench = Bench(args.cache, args.repeat)
    bench.export(onnx_models(args))
    tables = []
    rows = onnx_rows(bench, args)
    rows += [torch_row(bench, args)] if "torch" in args.only else []
    rows += gpu_rows(bench, args) if "gpu" in args.only else []
    if rows:
        tables.append(("Audit vs bare inference", table(AUDIT_COLUMNS, rows)))
    if "memory" in args.only:
        tables.append(("Peak memory against probe count", streaming_table(bench, args)))
        tables.append(("Peak memory and batch size", batch_table(bench, args)))
    if "folder" in args.only:
        tables.append(("A folder of images, the same decoding in both", folder_table(bench, args)))
    if "fixed" in args.only:
        tables.append(("Fixed costs, paid once per run", fixed_table(bench, args)))
        per_image = per_image_table(bench, args)
        if per_image:
            tables.append(("Per-image cost, fixed costs taken out", per_image))
    print(
        f"\nEach figure is the lowest of {args.repeat} run(s), each run in a fresh interpreter, bare and audit "
        "interleaved: wall seconds, CPU seconds (all threads) and peak RSS (VmHWM) each at its lowest.\n"
        f"Machine: {machine()}.\nLoad average (1, 5, 15 min): {load_before} before, {load_average()} after."
    )
    for title, text in tables:
        print(f"\n{title}:\n\n{text}")
    note = pytest_note(bench, args) if "fixed" in args.only else None
    if note:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
