"""The speed ratios docs/speed.md prints are those of the committed benchmark files.

Each check builds a fragment of the page from ``results/bench/*.json`` (whitespace collapsed,
so line wrapping does not matter) and the page must contain it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "results" / "bench"
PAGE = ROOT / "docs" / "speed.md"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@cache
def page() -> str:
    return _flat(PAGE.read_text())


@cache
def epoch_bench() -> dict:
    return json.loads((BENCH / "cpu.json").read_text())


def _variant(name: str) -> dict:
    return epoch_bench()["models"][0]["variants"][name]


def data_path_ratio() -> str:
    path = epoch_bench()["data_path"]
    return (
        f"| **{path['ratio_ours_over_authors']:.2f}x** ({path['ours']['images_per_s']:,.0f} "
        f"against {path['authors']['images_per_s']:,.0f}) |"
    )


def epoch_ratios() -> str:
    rows = [
        ("epoch time, ours fp32 eager / authors'", "nag-fp32"),
        ("ours bf16 autocast eager / authors'", "nag-bf16"),
        ("ours fp32 `torch.compile` / authors'", "nag-fp32-compiled"),
        ("ours bf16 compiled / authors'", "nag-bf16-compiled"),
        ("MBT-NAG restore / authors' (25-step epoch + a 20-batch search)", "mbt-restore"),
        ("MBT-NAG keep / authors'", "mbt-keep"),
    ]
    return " ".join(
        f"| {label} | {_variant(name)['epoch_ratio_vs_authors']:.2f} | |" for label, name in rows
    )


def epoch_commit() -> str:
    return f"from the clean commit {epoch_bench()['provenance']['git_commit'][:7]}"


CHECKS = [data_path_ratio, epoch_ratios, epoch_commit]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_speed_page_number_matches_bench_file(check):
    fragment = check()
    assert fragment in page(), f"docs/speed.md should print: {fragment}"


def test_bench_files_record_their_provenance():
    for name in ("cpu.json",):
        provenance = json.loads((BENCH / name).read_text())["provenance"]
        assert provenance["git_dirty"] is False, name
        assert provenance["data"]["name"] == "cifar10-jpeg.tar.gz", name
        assert len(provenance["data"]["sha256"]) == 16, name
