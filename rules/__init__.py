"""Alert rules: Prometheus-shaped YAML, evaluated streaming in event time per park.

Public surface: :class:`RulesEngine` (a :class:`parkwatch.events.Engine`), :func:`load_rules`
and :data:`PACK` (the shipped rule pack), :func:`run_test_paths` (``parkwatch rules test``).
"""

from rules.engine import RulesEngine
from rules.loader import PACK, RuleSet, load_rules
from rules.testing import TestReport, run_test_paths

__all__ = ["PACK", "RuleSet", "RulesEngine", "TestReport", "load_rules", "run_test_paths"]
