"""Cost of the dead-channel bound proof next to one bare forward batch of the same model.

The proof (``checks.dead_filters.certify``) propagates the input box through the graph with
interval arithmetic: no image and no runtime pass. Its target is at most one bare onnxruntime
forward pass of one image batch. For each model (torchvision, seeded random weights, exported
to ONNX at 224x224 with a dynamic batch), each measurement runs in a fresh subprocess:

- ``forward``: an onnxruntime session with the audit's options (default threads, CPU provider)
  runs one batch of ``--batch`` random images once to warm up, then once timed;
- ``certify``: the ONNX backend opens the model (not timed: the audit has it open already), then
  the check's own work is timed: ``model_graph()`` (a copy of the graph) and ``certify()``
  (numpy's BLAS held to one thread, as the check runs it).

Each worker also reports its whole process's wall time (interpreter start, imports, loading the
model, the work). The lowest of ``--repeat`` runs counts (other load only slows a run down);
forward and certify runs are interleaved.

Run: ``python benchmarks/bench_certify.py [--models resnet50 resnet18 mobilenet_v2] [--repeat 3]``.
A single measurement is ``--worker KIND MODEL BATCH CACHE``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0
SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def export_onnx(name: str, cache: Path) -> Path:
    """Export once (batch dimension dynamic); later runs reuse the file."""
    path = cache / f"{name}_seed{SEED}_{SIZE}.onnx"
    if path.exists():
        return path
    import warnings

    import torch
    import torchvision

    torch.manual_seed(SEED)
    model = getattr(torchvision.models, name)(weights=None).eval()
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.zeros(1, 3, SIZE, SIZE),
            str(partial),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    partial.rename(path)
    return path


def work_forward(path: Path, batch: int) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(SEED).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    session.run(None, {"image": images})  # warm-up: allocations, kernel choice
    start = time.perf_counter()
    session.run(None, {"image": images})
    return time.perf_counter() - start


def work_certify(path: Path, batch: int) -> float:
    from pytest_cnnaudit.backends.onnx import OnnxBackend
    from pytest_cnnaudit.checks.dead_filters.certify import certify
    from pytest_cnnaudit.config import InputSpec

    backend = OnnxBackend(path, InputSpec(size=(SIZE, SIZE), mean=MEAN, std=STD))
    kinds = {layer.id: layer.activation for layer in backend.layers}
    start = time.perf_counter()
    certificate = certify(backend.model_graph(), backend.input_spec, kinds)
    seconds = time.perf_counter() - start
    reached = sum(layer.reached for layer in certificate.layers.values())
    print(f"reached {reached} of {len(certificate.layers)} layers", file=sys.stderr)
    return seconds


def worker(kind: str, model: str, batch: int, cache: Path) -> None:
    path = export_onnx(model, cache)
    seconds = work_forward(path, batch) if kind == "forward" else work_certify(path, batch)
    print(json.dumps({"seconds": seconds}))


def run_worker(kind: str, model: str, batch: int, cache: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind, model, str(batch), str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    result["note"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnaudit-bench")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "MODEL", "BATCH", "CACHE"))
    args = parser.parse_args()
    if args.worker:
        kind, model, batch, cache = args.worker
        worker(kind, model, int(batch), Path(cache))
        return
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print("| model | forward batch | forward s | certify s | ratio | forward process s | certify process s | reached |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        export_onnx(model, args.cache)
        runs: dict[str, list[dict]] = {"forward": [], "certify": []}
        for _ in range(args.repeat):
            for kind in runs:
                runs[kind].append(run_worker(kind, model, args.batch, args.cache))
        forward = min(r["seconds"] for r in runs["forward"])
        certified = min(r["seconds"] for r in runs["certify"])
        processes = [min(r["process_seconds"] for r in runs[kind]) for kind in runs]
        reached = runs["certify"][-1]["note"].removeprefix("reached ")
        print(
            f"| {model} | {args.batch} | {forward:.2f} | {certified:.2f} | {certified / forward:.2f} | "
            f"{processes[0]:.2f} | {processes[1]:.2f} | {reached} |"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
