"""The hooks that exist only while auditing: collection, xdist hand-over, reports and the written files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..checks.lr_sanity.check import TORCH_MISSING
from ..config.loading import load_config
from ..config.model import AuditConfig, ModelSpec
from ..document import AuditDocument, Baseline, ModelDocument
from ..document.json_form import from_json_object
from ..document.pictures import Pictures
from ..engine.probes import check_probe_source
from ..errors import ConfigError, ProbeError
from .nodes import REPORT_ATTRIBUTE, ModelFile, attach_payload, attach_picture
from .planning import WORKER_LAYOUTS, is_model_file, model_files, relative_to_root, session_layouts
from .state import STATE, PluginState, layouts_to_text

if TYPE_CHECKING:
    from .progress import TerminalLines

#: The config file looked for when none is named.
CONFIG_NAME = "cnnaudit.yaml"
MATPLOTLIB_MISSING = "--cnnaudit-html needs matplotlib: pip install 'pytest-cnnaudit[report]'"


def _config_path(config: pytest.Config) -> tuple[Path | None, str]:
    """The config file and how it was found: ``--cnnaudit-config``, else the ini option, else
    ``cnnaudit.yaml`` in the rootdir, else ``cnnaudit.yaml`` in the invocation folder (when the
    command's paths moved the rootdir away from it). The second value says how, for the header."""
    given = config.getoption("cnnaudit_config") or config.getini("cnnaudit_config")
    if given:
        path = Path(given)
        if not path.is_absolute():
            base = Path.cwd() if config.getoption("cnnaudit_config") else config.rootpath
            path = base / path
        if not path.is_file():
            raise pytest.UsageError(f"cnnaudit: config file {given} does not exist")
        return path, ""
    in_root = config.rootpath / CONFIG_NAME
    here = config.invocation_params.dir / CONFIG_NAME
    moved = here.is_file() and here.resolve() != in_root.resolve()
    if in_root.is_file():
        ignored = f"; {CONFIG_NAME} in the invocation folder not used (name it with --cnnaudit-config)"
        return in_root, ignored if moved else ""
    if moved:
        return here, f" (from the invocation folder: the rootdir {config.rootpath} has no {CONFIG_NAME})"
    return None, ""


def _no_models_message(config_path: Path | None) -> str:
    found = f"{config_path} lists no models:" if config_path else f"no {CONFIG_NAME} found"
    return (
        f"cnnaudit: no model file to audit ({found}); name them on the command line "
        "(pytest --cnnaudit model.onnx, or a folder of models: pytest --cnnaudit models/) "
        f"or list them in {CONFIG_NAME}: models: [{{path: model.onnx}}]"
    )


def configure_state(config: pytest.Config) -> PluginState:
    """Validate the config, the probe images and the baseline before any model loads; a problem is a usage error."""
    saved, compared = config.getoption("cnnaudit_save_baseline"), config.getoption("cnnaudit_baseline")
    if saved and compared and Path(saved).resolve() == Path(compared).resolve():
        raise pytest.UsageError("cnnaudit: --cnnaudit-save-baseline and --cnnaudit-baseline name the same file")
    path, found = _config_path(config)
    try:
        audit_config = load_config(path)
        probe = audit_config.probe
        if probe.images is not None:
            check_probe_source(audit_config.base_dir / probe.images, probe.count, probe.augment)
        baseline = Baseline.load(Path(compared)) if compared else None
    except (ConfigError, ProbeError) as exc:
        raise pytest.UsageError(f"cnnaudit: {exc}") from None
    _check_torch(audit_config)
    is_worker = hasattr(config, "workerinput")
    target = config.getoption("cnnaudit_init")
    if target and Path(target).exists() and not is_worker:
        raise pytest.UsageError(f"cnnaudit: --cnnaudit-init {target} exists; remove it or name another file")
    state = PluginState(audit_config, str(path) if path else None, baseline, picture_outputs(config), found)
    config.stash[STATE] = state
    _add_config_models(config, state)
    if not is_worker and not model_files(config):
        raise pytest.UsageError(_no_models_message(path))
    return state


def _check_torch(audit_config: AuditConfig) -> None:
    """The learning-rate probe trains with torch: turned on without torch installed, it is a usage error now."""
    import importlib.util

    specs = [ModelSpec(path="-"), *audit_config.models]
    if any(audit_config.checks_for(spec).lr_sanity.enabled for spec in specs) and not importlib.util.find_spec("torch"):
        raise pytest.UsageError(f"cnnaudit: {TORCH_MISSING}")


def _add_config_models(config: pytest.Config, state: PluginState) -> None:
    """Models listed in the YAML are collected as if they were given on the command line."""
    given = {Path(arg.split("::")[0]).resolve() for arg in config.args}
    for spec in state.audit_config.models:
        path = (state.audit_config.base_dir / spec.path).resolve()
        if path not in given:
            if not path.exists():
                raise pytest.UsageError(f"cnnaudit: {state.config_path}: models: {spec.path} does not exist")
            config.args.append(str(path))


def picture_outputs(config: pytest.Config) -> bool:
    """Whether a picture is asked for: --cnnaudit-html (a usage error without matplotlib), or
    pytest-html's --html when matplotlib is installed (without it, failed items get no picture)."""
    import importlib.util

    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    if config.getoption("cnnaudit_html") and not has_matplotlib:
        raise pytest.UsageError(MATPLOTLIB_MISSING)
    return bool(config.getoption("cnnaudit_html")) or (has_matplotlib and pytest_html_plugin(config) is not None)


def pytest_html_plugin(config: pytest.Config) -> Any:
    """The pytest-html plugin module when it is installed and writing a report (``--html``), else None."""
    plugin = config.pluginmanager.get_plugin("html")
    return plugin if plugin is not None and config.getoption("htmlpath", None) else None


class AuditSession:
    """Collection of model files, the xdist hand-over, and everything reported from the items' documents."""

    def __init__(self, config: pytest.Config, state: PluginState) -> None:
        self.config = config
        self.state = state
        self.roots = [Path(arg.split("::")[0]).resolve() for arg in config.args]
        self.is_worker = hasattr(config, "workerinput")
        self.pytest_html = pytest_html_plugin(config) if state.pictures else None
        self.written: list[str] = []
        self.terminal_lines: TerminalLines | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Progress lines for long measurements, on the controller only and not under -q."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.is_worker or reporter.verbosity < 0:
            return
        from .progress import MeasuringProgress, TerminalLines

        self.terminal_lines = TerminalLines(reporter, self.config.pluginmanager.get_plugin("capturemanager"))
        self.state.progress = MeasuringProgress(self.terminal_lines.line, self.terminal_lines.restart_row)

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        if self.terminal_lines is not None:
            self.terminal_lines.running = (nodeid, location)

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if not is_model_file(file_path) or not self._selected(file_path.resolve()):
            return None
        # The session, not a Package, is the parent: a model file inside a Python package is
        # audited without importing that package's __init__.py. The node id is the model's name in
        # every report, also for a file outside the rootdir (pytest would give it an empty one).
        name = relative_to_root(file_path, self.config.rootpath)
        return ModelFile.from_parent(parent.session, path=file_path, nodeid=name)

    def _selected(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.roots)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """A ``layers:`` glob that matches no layer of any collected model is a typo, not a no-op."""
        import fnmatch

        if not self.state.layer_ids:
            return
        for index, rule in enumerate(self.state.audit_config.layers):
            if not any(fnmatch.fnmatchcase(layer, rule.match) for layer in self.state.layer_ids):
                raise pytest.UsageError(
                    f"cnnaudit: {self.state.config_path}: layers[{index}].match {rule.match!r} matches no layer of "
                    "the audited models; list their layer ids with: pytest --cnnaudit MODEL --collect-only -q"
                )

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: plan every model once, here, and hand the layouts to each worker."""
        node.workerinput[WORKER_LAYOUTS] = layouts_to_text(session_layouts(self.config))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """``-n N`` (``load``) and ``--dist loadgroup`` keep each model's items on one worker, which measures
        it once; other tests are spread as usual. Other modes (``loadfile``, ``each``, ...) are the user's."""
        if config.getvalue("dist") not in ("load", "loadgroup"):
            return None
        from .xdist import ModelGroupScheduling

        return ModelGroupScheduling(config, log)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        attach_payload(item, report)
        if self.pytest_html is not None:
            attach_picture(item, report, self.pytest_html)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, REPORT_ATTRIBUTE, None)
        if payload is None:
            return
        model = payload["model"]
        verdict = payload["verdict"]
        item = f"{verdict['check']}[{verdict['layer']}]" if verdict["layer"] is not None else verdict["check"]
        self.state.outcomes.setdefault(model, {})[item] = report.outcome
        if "document" in payload and model not in self.state.documents:
            self.state.documents[model] = ModelDocument.from_json(payload["document"])
        if "pictures" in payload and model not in self.state.pictures_by_model:
            self.state.pictures_by_model[model] = from_json_object(Pictures, payload["pictures"])

    def pytest_report_header(self, config: pytest.Config) -> str:
        from .. import __version__

        probe = self.state.audit_config.probe
        images = probe.images or "shipped photographs"
        path = self.state.config_path
        source = relative_to_root(path, config.rootpath) if path else f"defaults (no {CONFIG_NAME})"
        found = self.state.config_found
        return f"cnnaudit {__version__}: config {source}{found}; probe {images}, count {probe.count}, seed {probe.seed}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from ..report.terminal import summary_lines

        lines = summary_lines(self.state.documents_with_outcomes())
        if lines and terminalreporter.verbosity >= 0:
            # Ends the last progress line as pytest's own summaries do; without it the first
            # write_line would, leaving a blank line under the section's title.
            terminalreporter.ensure_newline()
            terminalreporter.section("cnnaudit")
            for line, colour in lines:
                terminalreporter.write_line(line, **({colour: True} if colour else {}))
        for line in self.written:
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        documents = self.state.documents_with_outcomes()
        option = self.config.getoption
        if option("cnnaudit_json"):
            AuditDocument(tuple(documents)).write_json(Path(option("cnnaudit_json")))
        if option("cnnaudit_save_baseline"):
            Baseline.from_documents(documents).write(Path(option("cnnaudit_save_baseline")))
        if option("cnnaudit_html"):
            self._write_html(Path(option("cnnaudit_html")), documents)
        if option("cnnaudit_init"):
            self._write_init(Path(option("cnnaudit_init")))

    def _write_html(self, path: Path, documents: list[ModelDocument]) -> None:
        from .. import __version__
        from ..report.html import build_html

        path.write_text(build_html(documents, self.state.pictures_by_model, __version__), encoding="utf-8")
        self.written.append(f"cnnaudit: HTML report written to {path}")

    def _write_init(self, path: Path) -> None:
        """From the audit's own verdicts, not pytest's outcomes: -k does not change the file."""
        from .. import __version__
        from ..report.init_config import ConfigTooLarge, starting_config

        documents = [self.state.documents[name] for name in sorted(self.state.documents)]
        measured = [document for document in documents if document.error is None]
        if not measured:
            self.written.append(f"cnnaudit: no model was measured, so {path} was not written")
            return
        files = {document.path: self.config.rootpath / document.path for document in measured}
        unmeasured = {document.path: document.error for document in documents if document.error is not None}
        try:
            text = starting_config(
                measured, self.state.audit_config, files, path.resolve().parent, unmeasured, __version__
            )
        except ConfigTooLarge as exc:
            self.written.append(f"cnnaudit: {path} was not written: {exc} (YAML aliases in factory_kwargs?)")
            return
        path.write_text(text, encoding="utf-8")
        self.written.append(
            f"cnnaudit: starting config written to {path}; audit with: pytest --cnnaudit --cnnaudit-config {path}"
        )
