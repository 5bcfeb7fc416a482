"""The oneDNN scan's committed summaries, and docs/cpu-memory-layout.md's numbers, are those
of the committed scan reports (``results/onednn-scan/*.json.gz``) and of the layout bench
(``results/bench/layout.json``).

Each check builds a fragment of the page from a report (whitespace collapsed, so line
wrapping does not matter) and the page must contain it.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from pagetext import flat_text
from scriptload import load_script

from bgd_experiments.reporting.paper import MODEL_LABELS
from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

ROOT = Path(__file__).resolve().parent.parent
SCANS = ROOT / "results" / "onednn-scan"
PAGE = ROOT / "docs" / "cpu-memory-layout.md"
SMALL = "amd-epyc-batches-3-200"
LARGE = "amd-epyc-batches-400-1000"
TOLERANCE = 1e-3


@cache
def page() -> str:
    return flat_text(PAGE)


@cache
def script():
    return load_script("scan_onednn")


@cache
def report(name: str) -> dict:
    return script().read_report(SCANS / f"{name}.json.gz")


def verdicts(name: str, isa: str) -> Counter:
    return Counter(case["results"][isa]["verdict"] for case in report(name)["cases"])


def wrong_weight_gradients(name: str, isa: str) -> dict[int, float]:
    """Batch -> the largest channels_last weight-gradient error among the wrong cases."""
    errors: dict[int, float] = {}
    for case in report(name)["cases"]:
        result = case["results"][isa]
        if result["verdict"] == "wrong":
            error = result.get("channels_last_vs_float64", result["layout_error"])["weight_grad"]
            errors[case["batch"]] = max(error, errors.get(case["batch"], 0.0))
    return errors


def _percent_span(values: list[float]) -> str:
    return f"{min(values) * 100:.0f}-{max(values) * 100:.0f}%"


@pytest.mark.parametrize("name", [SMALL, LARGE])
def test_each_committed_summary_is_its_report_rendered(name: str) -> None:
    assert (SCANS / f"{name}.md").read_text() == script().summary_from_report(report(name))


@pytest.mark.parametrize("name", [SMALL, LARGE])
def test_each_scan_was_made_from_a_clean_commit_and_records_its_machine(name: str) -> None:
    meta = report(name)["meta"]
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(meta["provenance"])
    assert meta["provenance"]["git_dirty"] is False
    assert meta["provenance"]["cpu_model"] == meta["cpu"]
    # Every case was scanned at every ISA level the report names.
    for case in report(name)["cases"]:
        assert set(case["results"]) == set(meta["isa"])


def test_the_page_shows_the_small_batch_counts_of_every_isa_level() -> None:
    meta = report(SMALL)["meta"]
    cases = len(report(SMALL)["cases"])
    for isa, ran in meta["isa"].items():
        counts = verdicts(SMALL, isa)
        row = (
            f"| {isa} | {ran} | {cases} | {counts['ok']} | {counts['wrong']} | "
            f"{counts['nchw-wrong']} | {counts['crash']} |"
        )
        assert row in page(), row
    batches = ", ".join(map(str, meta["train_batches"][:-1]))
    assert f"training batches {batches} and {meta['train_batches'][-1]}" in page()
    commit = meta["provenance"]["git_commit"][:7]
    assert f"`results/onednn-scan/{SMALL}.md`, from the clean commit {commit}" in page()
    minutes = sum(meta["wall"].values()) / 60
    assert f"provenance; {minutes:.0f} min for the three ISA levels" in page()


def test_the_page_shows_the_large_batch_counts_and_errors() -> None:
    meta = report(LARGE)["meta"]
    cases = len(report(LARGE)["cases"])
    assert f"{cases} cases per ISA level" in page()
    assert f"from the clean commit {meta['provenance']['git_commit'][:7]}" in page()
    wrong = wrong_weight_gradients(LARGE, "AVX2")
    batches = sorted(wrong)
    assert (
        f"AVX2 {verdicts(LARGE, 'AVX2')['ok']} ok, the same 1x1 stride-2 4 -> 8 convolution's "
        f"weight gradient wrong by {_percent_span(list(wrong.values()))} at "
        f"{' and '.join(map(str, batches))}"
    ) in page()
    for isa in ("default", "AVX512_CORE"):
        assert verdicts(LARGE, isa) == Counter(ok=cases)
    assert f"default and AVX512_CORE {cases} ok" in page()


def test_nchw_is_right_in_every_scanned_case() -> None:
    for name in (SMALL, LARGE):
        for isa in report(name)["meta"]["isa"]:
            assert verdicts(name, isa)["nchw-wrong"] == 0
            for case in report(name)["cases"]:
                result = case["results"][isa]
                for error in result.get("nchw_vs_float64", {}).values():
                    assert error <= TOLERANCE


def not_ok(name: str) -> dict[tuple[str, str], list[tuple[int, str, dict]]]:
    """(ISA level, convolution) -> its not-ok cases as (batch, verdict, result), by batch."""
    found: dict[tuple[str, str], list[tuple[int, str, dict]]] = {}
    for case in report(name)["cases"]:
        label = script().ConvShape(**case["shape"]).label()
        for isa, result in case["results"].items():
            if result["verdict"] != "ok":
                found.setdefault((isa, label), []).append(
                    (case["batch"], result["verdict"], result)
                )
    return found


def _batches(cases: list[tuple[int, str, dict]]) -> str:
    return ", ".join(str(batch) for batch, _, _ in sorted(cases, key=lambda c: c[0]))


def test_the_page_lists_every_small_batch_case_that_was_not_ok() -> None:
    found = not_ok(SMALL)
    shown = set()
    # AVX2 gets the strided 4 -> 8 shortcut's weight gradient wrong.
    avx2 = found[("AVX2", "1x1 s2 4->8 @32x32")]
    assert all(outcome == "wrong" for _, outcome, _ in avx2)
    errors = list(wrong_weight_gradients(SMALL, "AVX2").values())
    assert (
        f"| AVX2 | 1x1 stride 2, 4 -> 8 channels, 32x32 | {_batches(avx2)} | weight gradient "
        f"wrong by {_percent_span(errors)} |"
    ) in page()
    shown.add(("AVX2", "1x1 s2 4->8 @32x32"))
    # The AVX-512 levels corrupt the heap on the strided 8 -> 16 shortcuts.
    strided = [
        (isa, f"1x1 s2 8->16 @{size}")
        for isa in ("default", "AVX512_CORE")
        for size in ("16x16", "32x32")
    ]
    batches = {_batches(found[key]) for key in strided}
    assert len(batches) == 1
    assert all(outcome == "crash" for key in strided for _, outcome, _ in found[key])
    assert (
        f"| default, AVX512_CORE | 1x1 stride 2, 8 -> 16, 16x16 and 32x32 | {batches.pop()} | "
        "heap corruption (abort, segfault) |"
    ) in page()
    shown.update(strided)
    # DenseNet121's small 3x3 convolution crashed at one batch per AVX-512 level.
    for isa in ("default", "AVX512_CORE"):
        densenet = found[(isa, "3x3 s1 8->2 @4x4")]
        assert all(outcome == "crash" for _, outcome, _ in densenet)
        assert f"| {isa} | 3x3, 8 -> 2, 4x4 | {_batches(densenet)} | segfault |" in page()
        shown.add((isa, "3x3 s1 8->2 @4x4"))
    assert set(found) == shown


def test_the_page_quotes_the_errors_of_the_scans() -> None:
    wrong = [
        error
        for name in (SMALL, LARGE)
        for isa in report(name)["meta"]["isa"]
        for error in wrong_weight_gradients(name, isa).values()
    ]
    assert f"(errors of {_percent_span(wrong)} of its largest entry in the scans" in page()
    nchw = [
        error
        for case in report(SMALL)["cases"]
        for result in case["results"].values()
        for error in result.get("nchw_vs_float64", {}).values()
    ]
    layouts = [
        max(result["layout_error"].values())
        for case in report(SMALL)["cases"]
        for result in case["results"].values()
        if result["verdict"] == "ok"
    ]
    assert (
        f"its largest error against float64 (batches <= 25) was {max(nchw):.1e} of the largest "
        f"entry, and the largest difference between the two layouts in a right case "
        f"{max(layouts):.1e}"
    ).replace("e-0", "e-") in page()


def test_no_shape_of_the_committed_width_failed() -> None:
    # The committed results were trained at width 0.25; the page says none went through a
    # failing shape.
    for name in (SMALL, LARGE):
        for case in report(name)["cases"]:
            if any(result["verdict"] != "ok" for result in case["results"].values()):
                assert not any(model.endswith("@0.25") for model in case["models"])


@cache
def layout_bench() -> dict:
    return json.loads((ROOT / "results" / "bench" / "layout.json").read_text())


def test_the_page_shows_the_layout_bench() -> None:
    bench = layout_bench()
    assert bench["provenance"]["git_dirty"] is False
    assert f"from the clean commit {bench['provenance']['git_commit'][:7]}" in page()
    setting = bench["setting"]
    assert (
        f"a training step at width {setting['width']:g}, batch {setting['batch_size']}, "
        f"{setting['threads']} threads"
    ) in page()
    assert f"(median of {setting['steps']} steps each)" in page()
    ratios = []
    for name, row in bench["models"].items():
        ratio = row["ratio_nchw_over_channels_last"]
        ratios.append(ratio)
        assert (
            f"| {MODEL_LABELS[name]} | {row['nchw_s']:.3f} s | {row['channels_last_s']:.3f} s "
            f"| {ratio:.2f} |"
        ) in page()
    assert f"makes a CPU step {min(ratios):.2f}-{max(ratios):.2f}x slower" in page()
    # results/README.md says the same in time saved by channels_last.
    saved = [1 - 1 / ratio for ratio in ratios]
    assert (
        f"(steps take {min(saved) * 100:.0f}-{max(saved) * 100:.0f}% less time here, "
        "`results/bench/layout.md`)"
    ) in flat_text(ROOT / "results" / "README.md")


def test_the_committed_layout_summary_is_its_report_rendered() -> None:
    summary = load_script("bench_layout").summary(layout_bench())
    assert (ROOT / "results" / "bench" / "layout.md").read_text() == summary
