"""Dead filters: the check (:mod:`.check`), each dead channel's evidence (:mod:`.evidence`: the bound
proof in :mod:`.certify`, the witness search in :mod:`.witness`), and what dead channels cost (:mod:`.cost`)."""

from .check import CHECK, DeadFiltersChecker, dead_allowance, judge_dead_filters

__all__ = ["CHECK", "DeadFiltersChecker", "dead_allowance", "judge_dead_filters"]
