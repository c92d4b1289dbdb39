"""Pure text and dict builders: failure lines, the terminal summary table, the JSON report.

Everything here works from plain data that survives pytest-xdist's report
serialisation (the ``cnnaudit`` attribute each audit item's report carries), so
the summary and the JSON report are the same in serial and distributed runs.
"""

from __future__ import annotations

from typing import Any

from .result import SCHEMA, Verdict

#: Name of the attribute added to each audit item's TestReport (a JSON-able dict).
REPORT_ATTRIBUTE = "cnnaudit"


def failure_text(model: str, verdict: Verdict) -> str:
    """One finding: ``model :: check[layer]: what was measured vs the limit``."""
    return f"{model} :: {verdict.item_name}: {verdict.message}"


def verdict_record(model: str, verdict: Verdict, model_json: dict[str, Any] | None) -> dict[str, Any]:
    """What an item's report carries to the controller: its verdict and, for one item per model, the model."""
    record: dict[str, Any] = {
        "model": model,
        "check": verdict.check,
        "layer": verdict.layer,
        "outcome": verdict.outcome,
        "message": verdict.message,
        "figures": verdict.figures,
    }
    if model_json is not None:
        record["model_json"] = model_json
    return record


def summary_lines(records: list[dict[str, Any]]) -> list[str]:
    """A table per model: layer, channels, sparsity, dead channels, and the outcome of its items."""
    lines: list[str] = []
    for model in sorted({r["model"] for r in records}):
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            if record["model"] != model or record["layer"] is None:
                continue
            row = rows.setdefault(record["layer"], {"failed": []})
            figures = record["figures"]
            row.setdefault("channels", figures.get("channels"))
            if record["check"] == "sparsity":
                row["sparsity"] = figures.get("sparsity")
            if record["check"] == "dead_filters":
                row["dead"] = figures.get("dead_count")
            if record["outcome"] == "failed":
                row["failed"].append(record["check"])
        if not rows:
            continue
        width = max(len("layer"), *(len(layer) for layer in rows))
        lines.append(f"{model}")
        lines.append(f"  {'layer':<{width}}  {'channels':>8}  {'sparsity':>8}  {'dead':>5}  failed")
        for layer, row in rows.items():
            sparsity = f"{row['sparsity']:.3f}" if row.get("sparsity") is not None else "-"
            dead = str(row["dead"]) if row.get("dead") is not None else "-"
            channels = str(row["channels"]) if row.get("channels") is not None else "-"
            failed = ", ".join(row["failed"])
            lines.append(f"  {layer:<{width}}  {channels:>8}  {sparsity:>8}  {dead:>5}  {failed}")
        lines.extend(colour_profile_lines(records, model))
    return lines


def colour_profile_lines(records: list[dict[str, Any]], model: str) -> list[str]:
    """The model's colour profile (from its report document): median CSI, share of
    colour-selective channels and isoluminant share per layer."""
    profile = next(
        (r["model_json"].get("color_profile") for r in records if r["model"] == model and "model_json" in r), None
    )
    if not profile:
        return []
    width = max(len("colour"), *(len(entry["id"]) for entry in profile["layers"]))
    lines = [f"  {'colour':<{width}}  {'median CSI':>10}  {'selective':>9}  {'isoluminant':>11}"]
    for entry in profile["layers"]:
        median = _number(entry.get("csi_median"), ".3f")
        fraction = _number(entry.get("selective_fraction"), ".1%")
        share = _number(entry.get("isoluminant_share"), ".3f")
        lines.append(f"  {entry['id']:<{width}}  {median:>10}  {fraction:>9}  {share:>11}")
    return lines


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def json_report(records: list[dict[str, Any]], outcomes: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The ``cnnaudit-report/1`` document from the items' records; ``outcomes`` maps
    (model, item name) to pytest's outcome for that item."""
    models = []
    measured = {r["model"]: r["model_json"] for r in records if "model_json" in r}  # once per worker that measured
    for model, model_json in sorted(measured.items()):
        document = dict(model_json)
        ran = {key[1]: value for key, value in outcomes.items() if key[0] == model}
        document["checks"] = [
            {**check, "outcome": ran.get(_item_name(check), "not run")} for check in document["checks"]
        ]
        models.append(document)
    return {"schema": SCHEMA, "models": models}


def _item_name(check: dict[str, Any]) -> str:
    return f"{check['check']}[{check['layer']}]" if check["layer"] is not None else check["check"]
