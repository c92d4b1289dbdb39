"""pytest nodes: a model file is a collector, each (check, layer) verdict an item.

The expensive measurement lives at collector scope and runs once, lazily, when
the first of the model's items runs; every item then reads its slice of the
frozen :class:`ModelAudit`. All items of a model share an ``xdist_group``, so
under ``--dist loadgroup`` one worker measures each model.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from .audit import OpenedModel, open_model, run_audit
from .baseline import compare_layer
from .errors import CnnAuditError
from .isolation import run_audit_isolated
from .plugin_state import STATE
from .report import REPORT_ATTRIBUTE, failure_text, verdict_record
from .result import ModelAudit, Verdict


def xdist_group_name(model_nodeid: str) -> str:
    """A group name xdist keeps intact: it splits node ids on '@' and mangles '.' and '/'."""
    return "cnnaudit_" + re.sub(r"[^A-Za-z0-9_]", "_", model_nodeid)


class AuditFailure(Exception):
    """Raised by an item whose verdict failed; shown as plain lines, no traceback."""


class ModelFile(pytest.File):
    """A model named on the command line or in the config's ``models:``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened: OpenedModel | None = None
        self._audit: ModelAudit | None = None
        self._error: str | None = None
        self._reported = False

    @property
    def model_name(self) -> str:
        return self.nodeid

    def collect(self):
        state = self.config.stash[STATE]
        try:
            self._opened = open_model(self.path, state.audit_config, name=self.model_name)
        except CnnAuditError as exc:
            self._error = str(exc)
            yield AuditItem.from_parent(self, name="load", check="load", layer=None)
            return
        planned = self._opened.planned_items()
        layers = self._opened.backend.layers
        state.layer_ids.update(info.id for info in layers)
        if state.audit_config.runtime.isolate:
            self._opened.backend.close()  # the measuring child opens its own copy
        for check, layer in planned:
            name = f"{check}[{layer}]" if layer is not None else check
            yield AuditItem.from_parent(self, name=name, check=check, layer=layer)
        if state.baseline is not None:
            for info in layers:
                if info.tensor is not None:
                    yield AuditItem.from_parent(self, name=f"baseline[{info.id}]", check="baseline", layer=info.id)

    def audit(self) -> ModelAudit:
        """Measure once (on first use); a model that cannot be measured fails all its items."""
        if self._error is not None:
            raise AuditFailure(self.finding(self._error))
        if self._audit is None:
            opened = self._opened
            assert opened is not None
            state = self.config.stash[STATE]
            progress = functools.partial(state.progress, self.model_name) if state.progress else None
            try:
                if opened.config.runtime.isolate:
                    self._audit = run_audit_isolated(
                        self.path, opened.config, opened.spec, self.model_name, state.pictures, progress
                    )
                else:
                    self._audit = run_audit(opened, state.pictures, progress)
            except CnnAuditError as exc:
                self._error = str(exc)
                raise AuditFailure(self.finding(self._error)) from None
            finally:
                self._opened = None
        return self._audit

    def finding(self, message: str) -> str:
        """An error message about this model, naming it as pytest does (relative to the rootdir), once."""
        message = message.replace(str(self.path), self.model_name)
        return message if message.startswith(self.model_name) else f"{self.model_name}: {message}"

    def model_json_once(self) -> dict[str, Any] | None:
        """The model's report document, handed to exactly one item's report."""
        if self._reported or self._audit is None:
            return None
        self._reported = True
        return self._audit.to_json()


class AuditItem(pytest.Item):
    """One verdict: ``model.onnx::dead_filters[conv2]``."""

    def __init__(self, *, check: str, layer: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.layer = layer
        self.add_marker(pytest.mark.cnnaudit)
        self.add_marker(pytest.mark.xdist_group(name=xdist_group_name(self.parent.nodeid)))
        self.record: dict[str, Any] | None = None

    @property
    def model_file(self) -> ModelFile:
        assert isinstance(self.parent, ModelFile)
        return self.parent

    def runtest(self) -> None:
        audit = self.model_file.audit()
        verdict = self._verdict(audit)
        model = self.model_file.model_name
        model_json = self.model_file.model_json_once()
        self.record = verdict_record(model, verdict, model_json)
        if model_json is not None and audit.pictures is not None:
            self.record["pictures"] = audit.pictures  # for the HTML report; the JSON report leaves it out
        self.user_properties.extend((f"cnnaudit_{k}", v) for k, v in verdict.figures.items())
        if verdict.outcome == "skipped":
            pytest.skip(verdict.message)
        if verdict.outcome == "failed":
            raise AuditFailure(failure_text(model, verdict))

    def _verdict(self, audit: ModelAudit) -> Verdict:
        if self.check == "baseline":
            state = self.config.stash[STATE]
            assert state.baseline is not None and self.layer is not None
            return compare_layer(
                state.baseline, self.model_file.model_name, audit.layer(self.layer), state.audit_config
            )
        for verdict in audit.verdicts:
            if verdict.check == self.check and verdict.layer == self.layer:
                return verdict
        raise AuditFailure(f"{self.model_file.model_name}: no {self.name} verdict was produced (a bug in cnnaudit)")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, AuditFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, f"{self.model_file.model_name}::{self.name}"


def attach_record(item: pytest.Item, report: pytest.TestReport) -> None:
    """Put the item's verdict record on its call report (it travels through xdist)."""
    if isinstance(item, AuditItem) and report.when == "call":
        setattr(report, REPORT_ATTRIBUTE, item.record or _failed_record(item, report))


def attach_picture(item: pytest.Item, report: pytest.TestReport, pytest_html: Any) -> None:
    """pytest-html: a failed audit item carries its picture (its layer's chart, the filters, the sweep)."""
    if not isinstance(item, AuditItem) or report.when != "call" or not report.failed:
        return
    audit = item.model_file._audit
    if audit is None:
        return
    from .html_report import item_picture

    picture = item_picture(item.check, item.layer, audit.to_json(), audit.pictures)
    if picture is not None:
        report.extras = [*getattr(report, "extras", []), pytest_html.extras.png(picture, name=item.name)]


def _failed_record(item: AuditItem, report: pytest.TestReport) -> dict[str, Any]:
    message = str(report.longrepr) if report.longrepr else ""
    verdict = Verdict(item.check, item.layer, "failed", message)
    return verdict_record(item.model_file.model_name, verdict, None)
