"""The numbers docs/speed.md (and the bench figures docs/mbt-in-your-code.md and
docs/precision.md quote) prints are those of the committed benchmark files.

Each check builds a fragment of the page from ``results/bench/*.json`` (whitespace collapsed,
so line wrapping does not matter) and the page must contain it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from pagetext import flat_text

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "results" / "bench"
PAGE = ROOT / "docs" / "speed.md"


@cache
def page() -> str:
    return flat_text(PAGE)


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


@cache
def mbt_bench() -> dict:
    return json.loads((BENCH / "mbt.json").read_text())


def _span(values: list[float], digits: int) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def search_ratios() -> str:
    search = mbt_bench()["search"]
    rounds = search["rounds"]
    ratio = [r["search_ratio_fast_over_naive"] for r in rounds]
    trial = [r["trial_fast_over_step"] for r in rounds]
    forward = [r["no_grad_forward_over_step"] for r in rounds]
    return (
        f"| search time, ours / authors' style (same {search['trials_fast']} trials, same "
        f"sigmas) | {search['search_ratio_fast_over_naive']:.2f} (rounds {_span(ratio, 2)}) | "
        f"<= 0.92 | | one trial / one plain SGD step (a bare no-grad forward: "
        f"{_span(forward, 2)}) | {search['trial_fast_over_step']:.3f} (rounds "
        f"{_span(trial, 3)}) | <= 0.32 |"
    )


def epoch_mbt_ratios() -> str:
    epoch = mbt_bench()["epoch"]
    return (
        f"MBT-NAG / NAG, restore mode | {epoch['epoch_ratio_restore']:.3f} (runs "
        f"{_span(epoch['epoch_ratio_restore_runs'], 3)}) | <= 1.15 | | the same, "
        f"`keep_search_steps=true` | {epoch['epoch_ratio_keep']:.3f} (runs "
        f"{_span(epoch['epoch_ratio_keep_runs'], 3)}) | <= 1.07 |"
    )


def epoch_mbt_parts() -> str:
    epoch = mbt_bench()["epoch"]
    return (
        f"takes {epoch['search_restore_s']:.1f} s (restore) and {epoch['search_keep_s']:.1f} s "
        f"(keep) against {epoch['epoch_nag_s']:.1f} s for NAG's {epoch['steps']} steps, so "
        f"from the parts alone the ratios are {epoch['epoch_ratio_restore_at_250_steps']:.2f} "
        f"and {epoch['epoch_ratio_keep_at_250_steps']:.2f}"
    )


def epoch_share_note() -> str:
    epoch = mbt_bench()["epoch"]
    return f"(the paper's epoch is {epoch['steps']} steps: {epoch['epoch_ratio_restore']:.2f}x NAG"


def mbt_commit() -> str:
    return f"`mbt.txt`, from the clean commit {mbt_bench()['provenance']['git_commit'][:7]}"


CHECKS = [
    data_path_ratio,
    epoch_ratios,
    epoch_commit,
    search_ratios,
    epoch_mbt_ratios,
    epoch_mbt_parts,
    epoch_share_note,
    mbt_commit,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_speed_page_number_matches_bench_file(check):
    fragment = check()
    assert fragment in page(), f"docs/speed.md should print: {fragment}"


def test_bench_files_record_their_provenance():
    for name in ("cpu.json", "mbt.json", "search_precision.json"):
        provenance = json.loads((BENCH / name).read_text())["provenance"]
        assert provenance["git_dirty"] is False, name
        assert provenance["data"]["name"] == "cifar10-jpeg.tar.gz", name
        assert len(provenance["data"]["sha256"]) == 16, name


def _trials(start: str, mode: str) -> int:
    return mbt_bench()["warm_start"][f"start {start} warm_start={mode}"]["trials"]


def test_the_library_page_quotes_the_mbt_bench() -> None:
    library = flat_text(ROOT / "docs" / "mbt-in-your-code.md")
    epoch = mbt_bench()["epoch"]
    assert (
        f"a 250-step epoch at batch 200 costs {epoch['epoch_ratio_keep']:.2f}x NAG's instead "
        f"of {epoch['epoch_ratio_restore']:.2f}x on CPU"
    ) in library
    assert epoch["steps"] == 250 and epoch["epoch_batch_size"] == 200
    restart = [_trials("0.01", "restart"), _trials("100", "restart")]
    saved = [_trials("0.01", "previous_sigma"), _trials("100", "previous_sigma")]
    previous_lr = [_trials("0.01", "previous_lr"), _trials("100", "previous_lr")]
    carry = [_trials("0.01", "carry_over"), _trials("100", "carry_over")]
    assert all(s < r for s, r in zip(saved, restart, strict=True))
    assert (
        f"{saved[0]} against restart's {restart[0]} from start 1e-2 and {saved[1]} against "
        f"{restart[1]} from start 100; `previous_lr` took {previous_lr[0]} and "
        f"{previous_lr[1]}, `carry_over` {carry[0]} and {carry[1]}."
    ) in library


def test_the_precision_page_quotes_the_search_precision_bench() -> None:
    precision = flat_text(ROOT / "docs" / "precision.md")
    bench = json.loads((BENCH / "search_precision.json").read_text())
    low, high = bench["comparison"]
    assert (low["start_lr"], high["start_lr"]) == (0.01, 100.0)
    floor_low, floor_high = low["noise_floor"]["float_level"], high["noise_floor"]["float_level"]
    # "far inside" and "beyond" the float-level floor, as the page words them.
    assert low["ratio"] < floor_low["max_min"]
    assert floor_high["max_min"] < high["ratio"]
    assert (
        f"bf16 moved the found rate by a factor {low['ratio']:.3f}, far inside the float-level "
        f"noise floor ({floor_low['max_min']:.3f}, CV {floor_low['cv']:.2f}, from"
    ) in precision
    assert (
        f"from start 100 by {high['ratio']:.3f}, beyond the float-level floor there "
        f"({floor_high['max_min']:.3f}, CV {floor_high['cv']:.2f}) and about the seed-to-seed "
        f"spread ({high['noise_floor']['init_seed']['max_min']:.2f})"
    ) in precision
    assert (
        f"bf16's mean found rate is {low['mean_ratio']:.3f}x fp32's from 1e-2 and "
        f"{high['mean_ratio']:.3f}x from 100 (bf16 {_span(high['bf16_with_draws'], 4)}, fp32 "
        f"{_span(high['fp32_with_draws'], 4)})"
    ) in precision
