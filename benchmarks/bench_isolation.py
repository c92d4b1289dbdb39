"""The cost of crash isolation: auditing a model in a spawned child vs in this process.

    python benchmarks/bench_isolation.py MODEL.onnx [MODEL.onnx ...]

Both runs do the same work (open, measure, judge; colour analysis off); the
difference is the child's interpreter start, its imports and re-opening the model.
Fastest of three runs each, interleaved.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pytest_cnnaudit.config import parse_config
from pytest_cnnaudit.engine.audit import run_audit
from pytest_cnnaudit.engine.isolation import audit_isolated
from pytest_cnnaudit.engine.planning import open_model

REPEATS = 3


def main(models: list[str]) -> None:
    config = parse_config("checks: {color: {enabled: false}}")
    print("| model | in-process s | isolated child s | cost s |")
    print("|---|---|---|---|")
    for model in models:
        path = Path(model)
        in_process, isolated = [], []
        for _ in range(REPEATS):
            start = time.perf_counter()
            opened = open_model(path, config)
            plan = opened.plan()
            run_audit(opened)
            in_process.append(time.perf_counter() - start)
            start = time.perf_counter()
            audit_isolated(path, plan)
            isolated.append(time.perf_counter() - start)
        fast, slow = min(in_process), min(isolated)
        print(f"| {path.name} | {fast:.2f} | {slow:.2f} | {slow - fast:+.2f} |")


if __name__ == "__main__":  # the spawned child imports this module: keep the work behind the guard
    main(sys.argv[1:] or ["example_models/hue_task.onnx"])
