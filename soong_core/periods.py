"""The periods a budget counts spend in: one tuple for the config schema (what
``budget.period`` allows) and for :mod:`soong_core.budget` (which the agent carries, so
this module imports nothing)."""

BUDGET_PERIODS: tuple[str, ...] = ("day", "week", "month", "none")
DEFAULT_BUDGET_PERIOD = "month"
