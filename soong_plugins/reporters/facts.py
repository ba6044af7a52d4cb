"""What every reporter shows of one instance: moved to the core, :mod:`soong_core.display`.

Kept as a thin re-export for third-party reporters written against this module; new
code imports from :mod:`soong_core.display` (and ``short_ids`` from
:mod:`soong_core.select`).
"""

from __future__ import annotations

from soong_core.display import EMPTY_MESSAGE, Ended, Facts, facts_of, wants_ansi
from soong_core.select import short_ids

__all__ = ["EMPTY_MESSAGE", "Ended", "Facts", "facts_of", "short_ids", "wants_ansi"]
