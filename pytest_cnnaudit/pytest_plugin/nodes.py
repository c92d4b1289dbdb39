"""pytest nodes: a model file is a collector, each planned (check, layer) verdict an item.

Collection only plans: the model's layout comes from the session's planning (done once, in an
isolated child unless ``runtime.isolate`` is off, and handed to xdist workers), so a broken
model file fails its own ``load`` item instead of the collection. The measurement lives at
collector scope and runs once, lazily, when the first of the model's items runs; every item
then reads its verdict from the model's audit document.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from ..document import LOAD_CHECK, ModelDocument, Verdict, item_id
from ..document.json_form import to_json_value
from ..document.pictures import Pictures
from ..engine.audit import audit_document, load_error_document, run_audit
from ..engine.check import ModelPlan
from ..engine.isolation import audit_isolated
from ..engine.planning import named, planned_items
from ..errors import ConfigError
from .planning import layout_for
from .state import STATE, PluginState, path_key

#: Name of the attribute added to each audit item's TestReport (a JSON-able dict that travels through xdist).
REPORT_ATTRIBUTE = "cnnaudit"


class AuditFailure(Exception):
    """Raised by an item whose verdict failed; shown as plain lines, no traceback."""


def failure_text(model: str, verdict: Verdict) -> str:
    """One finding: ``model :: check[layer]: what was measured vs the limit``."""
    return f"{model} :: {verdict.item_id}: {verdict.message}"


class ModelFile(pytest.File):
    """A model named on the command line (or found in a folder given there) or in the config's ``models:``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plan: ModelPlan | None = None
        self._load_error: str | None = None
        self._document: ModelDocument | None = None
        self._pictures: Pictures | None = None
        self._reported = False

    @property
    def model_name(self) -> str:
        return self.nodeid

    @property
    def state(self) -> PluginState:
        return self.config.stash[STATE]

    def collect(self):
        state = self.state
        spec = state.audit_config.model_spec(self.path)
        layout = layout_for(self.config, self.path)
        plan = (
            None
            if isinstance(layout, str)
            else ModelPlan(self.model_name, spec, state.audit_config, layout, state.baseline)
        )
        try:
            items = planned_items(plan) if plan is not None else []
        except ConfigError as exc:  # layer rules that break a limit only together, on this model's layers
            layout = str(exc)
        if isinstance(layout, str):
            self._load_error = named(self.model_name, layout, self.path)
            yield AuditItem.from_parent(self, name=LOAD_CHECK, check=LOAD_CHECK, layer=None)
            return
        self._plan = plan
        state.layer_ids.update(info.id for info in layout.layers)
        for check, layer in items:
            yield AuditItem.from_parent(self, name=item_id(check, layer), check=check, layer=layer)

    def document(self) -> ModelDocument:
        """The model's audit document, measured once on first use."""
        if self._document is None:
            if self._load_error is not None:
                self._document = load_error_document(self.model_name, self._load_error, self._spec())
            else:
                self._document, self._pictures = self._measure()
        return self._document

    def _spec(self) -> Any:
        return self.state.audit_config.model_spec(self.path)

    def _measure(self) -> tuple[ModelDocument, Pictures | None]:
        plan, state = self._plan, self.state
        assert plan is not None
        progress = functools.partial(state.progress, self.model_name) if state.progress else None
        try:
            if plan.config.runtime.isolate:
                return audit_isolated(self.path, plan, state.pictures, progress)
            opened = state.opened.pop(path_key(self.path), None)
            if opened is not None:
                opened.name = self.model_name
                return run_audit(opened, plan.baseline, state.pictures, progress)
            return audit_document(self.path, plan.config, plan.spec, plan.name, plan.baseline, state.pictures, progress)
        finally:
            if state.progress is not None:
                state.progress.ended(self.model_name)

    def report_payload(self, verdict: Verdict) -> dict[str, Any]:
        """What an item's report carries to the controller: its verdict and, on one item, the model's document."""
        payload: dict[str, Any] = {"model": self.model_name, "verdict": verdict.to_json()}
        if not self._reported and self._document is not None:
            self._reported = True
            payload["document"] = self._document.to_json()
            if self._pictures is not None:
                payload["pictures"] = to_json_value(self._pictures)
        return payload


class AuditItem(pytest.Item):
    """One verdict: ``model.onnx::dead_filters[conv2]``."""

    def __init__(self, *, check: str, layer: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.layer = layer
        self.add_marker(pytest.mark.cnnaudit)
        self.payload: dict[str, Any] | None = None

    @property
    def model_file(self) -> ModelFile:
        assert isinstance(self.parent, ModelFile)
        return self.parent

    def runtest(self) -> None:
        document = self.model_file.document()
        model = self.model_file.model_name
        verdict = document.verdict(self.check, self.layer) or Verdict(
            self.check, self.layer, "failed", f"no {self.name} verdict was produced (a bug in cnnaudit)"
        )
        self.payload = self.model_file.report_payload(verdict)
        if verdict.figures is not None:
            self.user_properties.extend(
                (f"cnnaudit_{key}", value) for key, value in self.payload["verdict"]["figures"].items()
            )
        if verdict.outcome == "skipped":
            pytest.skip(verdict.message)
        if verdict.outcome == "failed":
            raise AuditFailure(failure_text(model, verdict))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, AuditFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, None, str]:
        # The item's own name, not "model.onnx::name": pytest's verbose line turns the dots of a domain
        # (before any "[") into "::", which printed "healthy::onnx::sparsity[conv1]", no node id at all.
        return self.path, None, self.name


def attach_payload(item: pytest.Item, report: pytest.TestReport) -> None:
    """Put the item's verdict (and its model's document, once) on its call report: it travels through xdist."""
    if isinstance(item, AuditItem) and report.when == "call":
        payload = item.payload
        if payload is None:  # the item failed before reading its verdict (an error in this plugin)
            message = str(report.longrepr) if report.longrepr else ""
            verdict = Verdict(item.check, item.layer, "failed", message)
            payload = {"model": item.model_file.model_name, "verdict": verdict.to_json()}
        setattr(report, REPORT_ATTRIBUTE, payload)


def attach_picture(item: pytest.Item, report: pytest.TestReport, pytest_html: Any) -> None:
    """pytest-html: a failed audit item carries its picture (its layer's chart, the filters, the sweep)."""
    if not isinstance(item, AuditItem) or report.when != "call" or not report.failed:
        return
    document = item.model_file._document
    if document is None:
        return
    from ..report.html import item_picture

    picture = item_picture(item.check, item.layer, document, item.model_file._pictures)
    if picture is not None:
        report.extras = [*getattr(report, "extras", []), pytest_html.extras.png(picture, name=item.name)]
