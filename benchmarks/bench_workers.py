"""The measurements of ``bench_audit.py``, each run in a fresh interpreter so that its peak RSS is its own.

``python benchmarks/bench_workers.py KIND MODEL IMAGES BATCH CACHE [FOLDER]`` prints one JSON line:
wall and CPU seconds (all threads of the process, its children included where it has any), peak
RSS in MB (VmHWM: not ``ru_maxrss``, which Linux carries over ``fork`` + ``exec``) and what the
kind adds. Kinds:

- ``bare``: an onnxruntime session (the backend's CPU options) on the audit's own probe images,
  decoded the audit's way (``prefetched_batches``), same batch size; ``gpu-bare``: on CUDA;
- ``audit``: ``audit_model`` with the colour check off (sparsity and dead filters: the main pass);
- ``audit-default``: ``audit_model`` with the default checks (the colour profile on);
  ``gpu-audit``: the default checks with ``runtime.device: cuda``;
- ``torch-bare``, ``torch-audit``: the same torchvision module under ``no_grad``, and audited (colour off);
- ``load``: opening the model and its first batch of one image (session creation), timed apart;
- ``child``: starting one isolation child (spawn, the package imported) that does nothing;
- ``pytest-empty``: ``pytest`` with the plugin loaded and nothing to collect;
- ``pytest``: a whole ``pytest --cnnaudit MODEL`` run (default checks), as a user runs it.

Models are torchvision's with random weights (``torch.manual_seed(0)``), exported once to ONNX
(opset 17, 224x224, dynamic batch) into CACHE. FOLDER (optional): a folder of probe images.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SEED = 0
SIZE = (224, 224)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (VmHWM; ``ru_maxrss`` where there is none)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def torch_model(name: str) -> Any:
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


def config_text(images: int, batch: int, folder: str | None, colour: bool, device: str = "cpu") -> str:
    probe = f"count: {images}, batch_size: {batch}" + (f", images: {folder}" if folder else "")
    text = f"probe: {{{probe}}}\nruntime: {{device: {device}}}\n"
    return text + ("" if colour else "checks: {color: {enabled: false}}\n")


def audit_config(images: int, batch: int, folder: str | None, colour: bool, device: str = "cpu") -> Any:
    from pytest_cnnaudit.config import parse_config

    return parse_config(config_text(images, batch, folder, colour, device), "<bench>")


class Stopwatch:
    """Wall time and CPU time (all threads of this process) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self, **extra: Any) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu, **extra}


def work_bare(model: str, images: int, batch: int, cache: Path, folder: str | None, device: str = "cpu") -> dict:
    import onnxruntime as ort

    from pytest_cnnaudit.backends.base import resolve_input_spec
    from pytest_cnnaudit.backends.device import onnx_providers
    from pytest_cnnaudit.config import InputSpec
    from pytest_cnnaudit.engine.audit import probe_set_for
    from pytest_cnnaudit.engine.probes import prefetched_batches

    config = audit_config(images, batch, folder, colour=False)
    clock = Stopwatch()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers, _ = onnx_providers(device)
    session = ort.InferenceSession(str(onnx_path(model, cache)), options, providers=providers)
    opened = time.perf_counter() - clock.wall
    spec = resolve_input_spec(InputSpec(size=SIZE), (None, 3, *SIZE), "bench")
    for model_input, _ in prefetched_batches(probe_set_for(config, spec), batch, spec):
        session.run(None, {"input": model_input})
    return clock.read(open_seconds=opened, provider=session.get_providers()[0])


def work_audit(
    model: str, images: int, batch: int, cache: Path, folder: str | None, colour: bool, device: str = "cpu"
) -> dict:
    import onnx  # noqa: F401 - imported before the clock starts, as bare inference imports onnxruntime
    import onnxruntime  # noqa: F401

    from pytest_cnnaudit.engine.audit import audit_model

    config = audit_config(images, batch, folder, colour, device)
    clock = Stopwatch()
    document = audit_model(onnx_path(model, cache), config)
    measured = sum(layer.sparsity is not None for layer in document.layers)
    return clock.read(layers=measured, batch_size=document.probe.batch_size, notes=list(document.notes))


def work_torch(model: str, images: int, batch: int, audit: bool) -> dict:
    import torch

    from pytest_cnnaudit.backends.base import resolve_input_spec
    from pytest_cnnaudit.config import InputSpec, ModelSpec
    from pytest_cnnaudit.engine.audit import audit_model, probe_set_for
    from pytest_cnnaudit.engine.probes import prefetched_batches

    module = torch_model(model)
    config = audit_config(images, batch, None, colour=False)
    clock = Stopwatch()
    if audit:
        audit_model(module, config, ModelSpec(path=model, input=InputSpec(size=SIZE)))
        return clock.read()
    spec = resolve_input_spec(InputSpec(size=SIZE), None, "bench")
    with torch.no_grad():
        for model_input, _ in prefetched_batches(probe_set_for(config, spec), batch, spec):
            module(torch.from_numpy(model_input))
    return clock.read()


def work_load(model: str, cache: Path) -> dict:
    """Opening the model (parse, shape inference, graph walk), then its session and one image, apart."""
    from pytest_cnnaudit.engine.audit import probe_set_for
    from pytest_cnnaudit.engine.measure import fit_batch_size
    from pytest_cnnaudit.engine.planning import open_model

    config = audit_config(1, 1, None, colour=False)
    clock = Stopwatch()
    opened = open_model(onnx_path(model, cache), config)
    open_seconds = time.perf_counter() - clock.wall
    fit_batch_size(opened.backend, probe_set_for(config, opened.backend.input_spec), 1, 4096)
    return clock.read(open_seconds=open_seconds)


def work_child() -> dict:
    from pytest_cnnaudit.engine.cpus import usable_cpus
    from pytest_cnnaudit.engine.isolation import run_in_child

    clock = Stopwatch()
    run_in_child(usable_cpus, (), 120.0)
    return clock.read()


def work_pytest(model: str, images: int, batch: int, cache: Path, empty: bool) -> dict:
    """``pytest`` as a user runs it, in a temporary folder with a cnnaudit.yaml; CPU time of the whole tree."""
    import os
    import resource
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        if not empty:
            Path(folder, "cnnaudit.yaml").write_text(config_text(images, batch, None, colour=True))
            command += ["--cnnaudit", str(onnx_path(model, cache))]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1, 5):  # 1: a verdict failed (random weights); 5: nothing collected
        raise SystemExit(f"pytest exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": wall, "cpu_seconds": cpu, "child_peak_mb": after.ru_maxrss / 2**10}


def main(argv: list[str]) -> None:
    kind, model, images, batch, cache, *rest = argv
    folder = rest[0] if rest else None
    n, size, where = int(images), int(batch), Path(cache)
    works = {
        "bare": lambda: work_bare(model, n, size, where, folder),
        "gpu-bare": lambda: work_bare(model, n, size, where, folder, "cuda"),
        "audit": lambda: work_audit(model, n, size, where, folder, colour=False),
        "audit-default": lambda: work_audit(model, n, size, where, folder, colour=True),
        "gpu-audit": lambda: work_audit(model, n, size, where, folder, colour=True, device="cuda"),
        "torch-bare": lambda: work_torch(model, n, size, audit=False),
        "torch-audit": lambda: work_torch(model, n, size, audit=True),
        "load": lambda: work_load(model, where),
        "child": work_child,
        "pytest-empty": lambda: work_pytest(model, n, size, where, empty=True),
        "pytest": lambda: work_pytest(model, n, size, where, empty=False),
        "export": lambda: {"path": str(export_onnx(model, where))},
    }
    result = works[kind]()
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":  # the isolation child imports this module: keep the work behind the guard
    main(sys.argv[1:])
