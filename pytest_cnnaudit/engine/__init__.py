"""The audit engine: planning, the one measurement pass, streaming statistics, isolation, and the
:class:`~pytest_cnnaudit.engine.check.Check` protocol every check implements. No pytest import."""
