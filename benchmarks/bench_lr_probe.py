"""Cost of the learning-rate probe next to the same number of bare torch training steps, and of the sweep.

Model: torchvision ``resnet18``, random init (seed 0), in memory, CPU, input 3x112x112 by
default (``--size``; 224 works too, about four times slower). Settings are the defaults
of ``checks.lr_sanity`` (SGD, momentum 0.9, lr 0.01, 20 steps of 8 images, objective
``self``) over the default 32 probe images.

- ``bare``: what a plain fine-tuning loop costs: a deep copy of the module in train mode,
  SGD, the same 20 steps over the same probe images (made into model input before the
  clock starts), cross-entropy to the model's own predictions. Nothing else.
- ``probe``: the whole probe for one rate, as the audit runs it: the private copy and its
  ``torch.export`` graph, the dead channels before, the same 20 training steps (deterministic
  kernels), the dead channels after. Its parts are printed too.
- ``sweep``: the lr_sanity analysis with ``sweep: true``: the configured rate plus the
  grid 1e-5 .. 10 (two rates per decade), stopping at the first unsafe rate. A random-init
  resnet18 has near-dead channels (active at <1% of positions, at 0.2% of the layer's
  typical peak) that the first rate already tips over, so ``--max-new-dead 0.02`` lets
  the sweep climb the grid.

Both ``bare`` and ``probe`` run with the probe's thread count and alternate, ``--repeats``
times; the medians of wall and CPU seconds are compared, so load from other processes hits
both alike. On a loaded machine, ``--threads 1`` keeps idle threads from spinning.

Run: ``python benchmarks/bench_lr_probe.py [--size 112] [--repeats 3] [--no-sweep | --skip-ratio]
[--sweep-size 64] [--max-new-dead 0.02]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

SEED = 0


def resnet18() -> Any:
    import torch
    import torchvision

    torch.manual_seed(SEED)
    return torchvision.models.resnet18(weights=None).eval()


def audit_context(model: Any, size: int, sweep: bool, max_new_dead: float = 0) -> Any:
    """The context the audit hands its checks, after the main pass (stats are not needed here)."""
    from pytest_cnnaudit.config import InputSpec, ModelSpec, parse_config
    from pytest_cnnaudit.engine.audit import probe_set_for
    from pytest_cnnaudit.engine.check import AuditContext
    from pytest_cnnaudit.engine.planning import open_model

    settings = f"enabled: true, sweep: {str(sweep).lower()}, max_new_dead: {max_new_dead}"
    config = parse_config(f"checks:\n  lr_sanity: {{{settings}}}\n", "<bench>")
    spec = ModelSpec(path="resnet18", input=InputSpec(size=(size, size)))
    opened = open_model(model, config, spec, name="resnet18")
    probes = probe_set_for(config, opened.backend.input_spec.size)
    return AuditContext(opened.plan(), model, opened.backend, probes, {}, config.probe.batch_size)


def bare_training(model: Any, context: Any) -> dict[str, float]:
    """Wall and CPU seconds of ``steps`` plain training steps on the probe images."""
    import torch
    import torch.nn.functional as F

    from pytest_cnnaudit.checks.lr_sanity.probe import probe_inputs

    settings = context.plan.config.checks.lr_sanity
    count = min(len(context.probes), settings.steps * settings.batch_size)
    module = copy.deepcopy(model)
    inputs = probe_inputs(context.probes, count, context.backend.input_spec)
    with torch.no_grad():
        targets = module(inputs).argmax(dim=1)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=settings.lr, momentum=settings.momentum)
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(settings.steps):
        rows = torch.arange(step * settings.batch_size, (step + 1) * settings.batch_size) % count
        loss = F.cross_entropy(module(inputs[rows]), targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"total": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def probe_run(context: Any) -> dict[str, float]:
    """Seconds of the whole one-rate probe, and of its parts."""
    from pytest_cnnaudit.checks.lr_sanity.probe import fine_tuning_probe

    settings = context.plan.config.checks.lr_sanity
    start, cpu = time.perf_counter(), time.process_time()
    with fine_tuning_probe(context, settings) as probe:
        ready = time.perf_counter()
        probe.train(settings.lr)
        trained, trained_cpu = time.perf_counter(), time.process_time()
        probe.dead_channels()  # once more, only to time the measurement inside train()
        measured, measured_cpu = time.perf_counter(), time.process_time()
    done = time.perf_counter()
    measuring = measured - trained
    return {
        "total": done - start - measuring,
        "cpu": time.process_time() - cpu - (measured_cpu - trained_cpu),
        "copy_export_dead_before": ready - start,
        "training_steps": trained - ready - measuring,
        "dead_after": measuring,
    }


def probe_ratio(model: Any, size: int, repeats: int, threads: int) -> None:
    """Print bare and probe seconds, alternating ``repeats`` times, and the ratio of their medians."""
    import torch

    context = audit_context(model, size, sweep=False)
    torch.set_num_threads(threads)
    bare: list[dict[str, float]] = []
    probes: list[dict[str, float]] = []
    for _ in range(repeats):
        bare.append(bare_training(model, context))
        probes.append(probe_run(context))
    bare_median = {key: statistics.median(b[key] for b in bare) for key in bare[0]}
    parts = {key: statistics.median(p[key] for p in probes) for key in probes[0]}
    result: dict[str, Any] = {
        "size": size,
        "threads": threads,
        "bare_seconds": [round(b["total"], 2) for b in bare],
        "probe_seconds": [round(p["total"], 2) for p in probes],
        "bare_cpu_seconds": [round(b["cpu"], 2) for b in bare],
        "probe_cpu_seconds": [round(p["cpu"], 2) for p in probes],
        "probe_parts_median": {key: round(value, 2) for key, value in parts.items()},
        "ratio_probe_to_bare": round(parts["total"] / bare_median["total"], 3),
        "cpu_ratio_probe_to_bare": round(parts["cpu"] / bare_median["cpu"], 3),
    }
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112, help="input height and width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--sweep-size", type=int, help="input size of the sweep (default: --size)")
    parser.add_argument(
        "--max-new-dead",
        type=float,
        default=0,
        help="the sweep's max_new_dead (random-init nets lose near-dead filters)",
    )
    parser.add_argument("--skip-ratio", action="store_true", help="only the sweep")
    parser.add_argument("--threads", type=int, help="override the probe's thread count (1: timings robust to load)")
    args = parser.parse_args()

    from pytest_cnnaudit.checks.lr_sanity import probe as lr_probe
    from pytest_cnnaudit.checks.lr_sanity.check import LrSanityChecker

    if args.threads:
        lr_probe.MAX_THREADS = args.threads
    threads = lr_probe.probe_threads()
    print(f"resnet18, random init, input 3x{args.size}x{args.size}, {threads} threads")
    model = resnet18()
    if not args.skip_ratio:
        probe_ratio(model, args.size, args.repeats, threads)
    if not args.no_sweep:
        sweep_size = args.sweep_size or args.size
        sweep_context = audit_context(model, sweep_size, sweep=True, max_new_dead=args.max_new_dead)
        start = time.perf_counter()
        sweep = LrSanityChecker().judge(sweep_context).sections["lr_sweep"]
        seconds = time.perf_counter() - start
        curve = sweep.curve
        print(
            json.dumps(
                {
                    "sweep_size": sweep_size,
                    "max_new_dead": args.max_new_dead,
                    "sweep_seconds": round(seconds, 1),
                    "rates_run": len(curve) + 1,  # the grid's rates plus the configured one
                    "max_safe_lr": sweep.max_safe_lr,
                    "curve": [(point.lr, point.new_dead, point.loss_end) for point in curve],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
