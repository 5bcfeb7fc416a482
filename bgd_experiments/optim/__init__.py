"""MBT-GD / MBT-MMT / MBT-NAG: the paper's mini-batch backtracking learning-rate search.

* :func:`mbt_search` -- the search (fast path), usable from any PyTorch training loop.
* :func:`mbt_search_reference` -- the same search written plainly, for checking.
* :class:`SearchSettings` -- one search's settings, checked when built; :func:`search_with`
  and :func:`reference_search_with` take them as one object.
* :class:`MBTSGD` -- SGD / heavy-ball / Nesterov whose rate the search sets, with the
  paper's per-epoch schedule and plateau switch.
* :class:`MBTPlateau` -- the plateau switch (alpha, momentum) and early stop of MBT.
* :class:`Patience` -- the authors' epochs-without-improvement counters and early stop.
* :class:`SearchProgress` -- what a search's progress callback receives.
* :func:`search_mode`, :func:`batch_norm_layers` -- the model's state during a search (for
  writing another search to compare with, as ``scripts/bench_mbt.py`` does).
"""

from ._common import (
    SearchProgress,
    SearchResult,
    SearchSettings,
    batch_norm_layers,
    search_mode,
)
from .mbt_sgd import MBTSGD, WARM_START_MODES
from .patience import Patience, PatienceStop
from .plateau import PLATEAU_RULES, MBTPlateau
from .reference import mbt_search_reference, reference_search_with
from .search import mbt_search, search_with

__all__ = [
    "MBTSGD",
    "PLATEAU_RULES",
    "WARM_START_MODES",
    "MBTPlateau",
    "Patience",
    "PatienceStop",
    "SearchProgress",
    "SearchResult",
    "SearchSettings",
    "batch_norm_layers",
    "mbt_search",
    "mbt_search_reference",
    "reference_search_with",
    "search_mode",
    "search_with",
]
