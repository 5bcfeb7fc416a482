"""A documentation page as one line of text, for tests that look for fragments in it."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path


@cache
def flat_text(path: Path) -> str:
    """The page with every run of whitespace made one space, so line wrapping does not matter."""
    return re.sub(r"\s+", " ", path.read_text())
