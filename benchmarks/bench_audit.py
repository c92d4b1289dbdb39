"""Cost of an audit next to a bare inference of the same probe images.

For each model (torchvision ResNets, random init with a fixed seed, exported to
ONNX at 224x224 with a dynamic batch), every measurement runs in a fresh
subprocess so that its peak RSS is its own:

- ``probes``: only generating the probe images and turning them into model input;
- ``bare``: onnxruntime (or torch under ``no_grad``) on those same images, same
  batch size, same session options as the audit's (default threads, CPU provider);
- ``audit``: ``audit_model`` with the colour check off: the one streaming pass;
- ``audit-default``: ``audit_model`` with the default checks (the colour analysis on).

Both ``bare`` and ``audit`` time opening the model, generating the probe images
and running them, so the time ratio is what a user pays for an audit over
plain inference; the probe generation time is printed on its own. The torch
audit's time includes tracing the module with ``torch.export``, which bare
inference does not need (also printed on its own). The streaming row compares
the audit's peak RSS at a few and at many probe images (lowest of ``--repeat`` runs each).

Run: ``python benchmarks/bench_audit.py [--quick]``; ``--help`` lists the options.
A single measurement is ``--worker KIND MODEL BACKEND IMAGES BATCH CACHE``, which is
what the parent runs and what to hand to ``python -m cProfile``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

SEED = 0
SIZE = (224, 224)
COLUMNS = (
    "model",
    "backend",
    "images",
    "batch",
    "bare s",
    "audit s",
    "time ratio",
    "bare peak MB",
    "audit peak MB",
    "memory ratio",
)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux: VmHWM, the high-water mark of this process image alone. ``ru_maxrss``
    is not enough there: Linux carries it over ``fork`` + ``exec`` from the parent.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    try:
        import resource
    except ImportError:  # Windows: psutil reports the peak working set
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def torch_model(name: str) -> Any:
    """A torchvision model with seeded random weights, in eval mode."""
    import torch
    import torchvision

    torch.manual_seed(SEED)
    return getattr(torchvision.models, name)(weights=None).eval()


def onnx_path(name: str, cache: Path) -> Path:
    return cache / f"{name}_seed{SEED}_{SIZE[0]}x{SIZE[1]}.onnx"


def export_onnx(name: str, cache: Path) -> Path:
    """Export once (batch dimension dynamic); later runs reuse the file."""
    import warnings

    import torch

    path = onnx_path(name, cache)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, but self-contained and quick
        torch.onnx.export(
            torch_model(name),
            torch.zeros(1, 3, *SIZE),
            str(partial),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    partial.rename(path)
    return path


#: The configuration of the main rows: the one streaming pass (sparsity, dead channels) and
#: nothing else; the colour analysis, on by default, reruns images and gets a row of its own.
MAIN_PASS_ONLY = "checks: {color: {enabled: false}}\n"


def audit_config(images: int, batch_size: int, main_pass_only: bool = True) -> Any:
    from pytest_cnnaudit.config import parse_config

    text = f"probe: {{count: {images}, batch_size: {batch_size}}}\n" + (MAIN_PASS_ONLY if main_pass_only else "")
    return parse_config(text, "<bench>")


def model_input_batches(config: Any, spec: Any) -> Any:
    """The audit's own probe images as model input, one batch at a time."""
    from pytest_cnnaudit.audit import probe_set_for
    from pytest_cnnaudit.probes import to_model_input

    for batch in probe_set_for(config, spec).batches(config.probe.batch_size):
        yield to_model_input(batch, spec)


def resolved_spec(shape: tuple[int | None, ...] | None) -> Any:
    from pytest_cnnaudit.backends.base import resolve_input_spec
    from pytest_cnnaudit.config import InputSpec

    return resolve_input_spec(InputSpec(size=SIZE), shape, "bench")


def ort_session(path: Path) -> Any:
    """A session with the options the ONNX backend uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Stopwatch:
    """Wall time and CPU time (all threads of this process) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self, **extra: Any) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu, **extra}


def work_export(model: str, backend: str, config: Any, cache: Path) -> dict:
    clock = Stopwatch()
    export_onnx(model, cache)
    return clock.read()


def work_probes(model: str, backend: str, config: Any, cache: Path) -> dict:
    spec = resolved_spec((None, 3, *SIZE))
    clock = Stopwatch()
    for _ in model_input_batches(config, spec):
        pass
    return clock.read()


def work_bare(model: str, backend: str, config: Any, cache: Path) -> dict:
    if backend == "torch":
        import torch

        module = torch_model(model)
        clock = Stopwatch()
        with torch.no_grad():
            for batch in model_input_batches(config, resolved_spec(None)):
                module(torch.from_numpy(batch))
        return clock.read()
    import onnxruntime  # noqa: F401 - imported before the clock starts, as for the audit

    clock = Stopwatch()
    session = ort_session(onnx_path(model, cache))
    image_input = session.get_inputs()[0]
    spec = resolved_spec(tuple(d if isinstance(d, int) else None for d in image_input.shape))
    for batch in model_input_batches(config, spec):
        session.run(None, {image_input.name: batch})
    return clock.read()


def work_audit(model: str, backend: str, config: Any, cache: Path) -> dict:
    from pytest_cnnaudit.config import InputSpec, ModelSpec

    audit_module = importlib.import_module("pytest_cnnaudit.audit")  # the package exports a function of that name
    if backend == "torch":
        target = torch_model(model)
        spec = ModelSpec(path=model, input=InputSpec(size=SIZE))
    else:
        import onnxruntime  # noqa: F401 - imported before the clock starts, as for bare inference

        target, spec = onnx_path(model, cache), None
    opening: list[float] = []
    open_backend = audit_module.open_backend

    def timed_open_backend(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return open_backend(*args, **kwargs)
        finally:
            opening.append(time.perf_counter() - start)

    audit_module.open_backend = timed_open_backend
    clock = Stopwatch()
    result = audit_module.audit_model(target, config, spec)
    measured = sum(layer.stats is not None for layer in result.layers)
    return clock.read(open_seconds=opening[0], layers=measured, batch_size=result.probe["batch_size"])


#: Worker kinds; "audit-default" is the audit with the default checks (the colour analysis on).
WORK = {
    "export": work_export,
    "probes": work_probes,
    "bare": work_bare,
    "audit": work_audit,
    "audit-default": work_audit,
    "audit-traced": work_audit,
}


def worker(argv: list[str]) -> None:
    kind, model, backend, images, batch_size, cache = argv
    config = audit_config(int(images), int(batch_size), main_pass_only=kind != "audit-default")
    if kind == "audit-traced":
        # numpy reports its allocations to tracemalloc; onnxruntime's arena does not. The traced peak is
        # the audit's own memory, exactly, which the RSS peak shows only through the arena's noise.
        tracemalloc.start()
    result = WORK[kind](model, backend, config, Path(cache))
    if kind == "audit-traced":
        result["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))


def measure(kind: str, model: str, backend: str, images: int, batch_size: int, cache: Path) -> dict:
    """One measurement in a fresh interpreter, so the peak RSS is this measurement's alone."""
    command = [sys.executable, __file__, "--worker", kind, model, backend, str(images), str(batch_size), str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {model} {backend} {images} images failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {kind:6} {model:9} {backend:5} {images:5} images: {result['seconds']:7.2f} s "
        f"(cpu {result['cpu_seconds']:7.2f} s), peak {result['peak_mb']:6.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    return result


def fastest(runs: list[dict]) -> dict:
    """The fastest run's numbers (other load only ever slows a run down): the least wall and
    CPU time, each over all runs, and the largest peak RSS."""
    best = dict(min(runs, key=lambda run: run["seconds"]))
    best["cpu_seconds"] = min(run["cpu_seconds"] for run in runs)
    best["peak_mb"] = max(run["peak_mb"] for run in runs)
    return best


def compare(
    model: str, backend: str, images: int, batch_size: int, cache: Path, repeat: int, audit_kind: str = "audit"
) -> tuple[dict, dict]:
    """Bare and audit runs, interleaved so that a burst of other load hits both alike."""
    runs: dict[str, list[dict]] = {"bare": [], audit_kind: []}
    for _ in range(repeat):
        for kind, done in runs.items():
            done.append(measure(kind, model, backend, images, batch_size, cache))
    return fastest(runs["bare"]), fastest(runs[audit_kind])


def cpu_ratio(bare: dict, audit: dict) -> str:
    """CPU seconds (all threads) are less disturbed by other load than wall time."""
    return (
        f"CPU time {bare['cpu_seconds']:.1f} s bare, {audit['cpu_seconds']:.1f} s audit "
        f"({audit['cpu_seconds'] / bare['cpu_seconds']:.2f}x)"
    )


def batch_label(batch_size: int, audit: dict) -> str:
    """The batch size, and the audit's own where its memory budget shrank it."""
    used = audit.get("batch_size", batch_size)
    return str(batch_size) if used == batch_size else f"{batch_size} (audit {used})"


def table_row(model: str, backend: str, images: int, batch_size: int, bare: dict, audit: dict) -> str:
    return (
        f"| {model} | {backend} | {images} | {batch_label(batch_size, audit)} | {bare['seconds']:.2f} | "
        f"{audit['seconds']:.2f} | "
        f"{audit['seconds'] / bare['seconds']:.2f}x | {bare['peak_mb']:.0f} | {audit['peak_mb']:.0f} | "
        f"{audit['peak_mb'] / bare['peak_mb']:.2f}x |"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], help="torchvision model names")
    parser.add_argument("--images", type=int, default=256, help="probe images per run")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (audit and bare)")
    parser.add_argument(
        "--streaming",
        type=int,
        nargs=2,
        default=[64, 1024],
        metavar=("FEW", "MANY"),
        help="probe counts of the streaming row (resnet18, onnx)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest counts")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch backend row")
    parser.add_argument(
        "--no-colour-row", action="store_true", help="skip the row of the default checks (colour analysis on)"
    )
    parser.add_argument("--quick", action="store_true", help="resnet18 only, 64 images, streaming 64 vs 256")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cnnaudit-bench",
        help="folder of the exported ONNX models",
    )
    args = parser.parse_args()
    if args.quick:
        args.models, args.images, args.streaming, args.repeat = ["resnet18"], 64, [64, 256], 1
    return args


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):  # Windows
        return "unknown"


def main() -> None:
    # This process never imports torch or onnxruntime: it only starts and reads the workers.
    args = parse_args()
    batch = args.batch_size
    load_before = load_average()
    for model in args.models:
        if not onnx_path(model, args.cache).exists():
            measure("export", model, "onnx", 1, batch, args.cache)

    rows, notes = [], []
    for model in args.models:
        probes = measure("probes", model, "onnx", args.images, batch, args.cache)
        bare, audit = compare(model, "onnx", args.images, batch, args.cache, args.repeat)
        rows.append(table_row(model, "onnx", args.images, batch, bare, audit))
        notes.append(
            f"{model} onnx: probe generation {probes['seconds']:.2f} s of both times (peak {probes['peak_mb']:.0f} MB "
            f"alone); opening the model {audit['open_seconds']:.2f} s of the audit (bare: session only); "
            f"{audit['layers']} measured layers; {cpu_ratio(bare, audit)}"
        )
    if not args.no_colour_row:
        model = args.models[0]
        bare, audit = compare(model, "onnx", args.images, batch, args.cache, args.repeat, "audit-default")
        rows.append(table_row(model, "onnx, default checks", args.images, batch, bare, audit))
        notes.append(f"{model} onnx, default checks (colour analysis on): {cpu_ratio(bare, audit)}")
    if not args.no_torch:
        bare, audit = compare("resnet18", "torch", args.images, batch, args.cache, args.repeat)
        rows.append(table_row("resnet18", "torch", args.images, batch, bare, audit))
        notes.append(
            f"resnet18 torch: torch.export of the module {audit['open_seconds']:.2f} s of the audit; "
            f"{cpu_ratio(bare, audit)}"
        )
    # Memory only, interleaved, lowest peak of --repeat runs each: onnxruntime's arena moves a run's peak
    # by tens of MB either way, which a single pair of runs can mistake for growth (or hide).
    streaming = [
        [measure("audit-traced", "resnet18", "onnx", n, batch, args.cache) for n in args.streaming]
        for _ in range(args.repeat)
    ]
    few, many = (min((runs[i] for runs in streaming), key=lambda run: run["peak_mb"]) for i in (0, 1))

    print(
        f"\nFastest of {args.repeat} runs each; probe images generated inside both timings; "
        f"load average {load_before} before, {load_average()} after.\n"
    )
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    print("\n".join(rows))
    print(
        f"\nStreaming (resnet18, onnx, batch {batch}, lowest of {args.repeat}): audit peak RSS {few['peak_mb']:.0f} MB at {args.streaming[0]} "
        f"images, {many['peak_mb']:.0f} MB at {args.streaming[1]} ({many['peak_mb'] / few['peak_mb']:.2f}x); "
        f"peak of the audit's own (numpy and Python) allocations {few['traced_peak_mb']:.1f} MB at "
        f"{args.streaming[0]}, {many['traced_peak_mb']:.1f} MB at {args.streaming[1]}\n"
    )
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
