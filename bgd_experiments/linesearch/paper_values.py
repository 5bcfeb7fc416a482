"""What the paper states for its deterministic experiments (Section 3), in one place.

Each entry is one quantity the paper reports for Examples 3.6, 3.7 and the Mexican hat
(Figure 2(a)). ``value`` is the number the paper prints, or None where the project's spec
(``shared/spec/algorithms.md``) gives only the paper's words; ``text`` is the paper's
statement as the report shows it. :mod:`bgd_experiments.reporting.function_claims` puts our
measured value beside each entry.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKTRACKING = "Backtracking GD"
UNBOUNDED = "Unbounded Backtracking GD"
TWO_WAY = "Two-way Backtracking GD"

# Quantity keys, shared with the report that fills in our side.
ITERATIONS = "iterations"
FINAL_POINT = "final point"
FINAL_STEP = "final step size"
SETTLE_ITERATION = "iteration after which the step size is constant"


@dataclass(frozen=True)
class PaperValue:
    """One quantity the paper reports for a deterministic experiment."""

    example: str  # "example_3_6", "example_3_7" or "mexican_hat": the report's section keys
    method: str
    quantity: str
    value: float | None  # the printed number; None when the paper only describes it
    text: str  # the paper's statement, as shown in the report's "paper" column


PAPER_VALUES: tuple[PaperValue, ...] = (
    PaperValue("example_3_6", BACKTRACKING, ITERATIONS, 10, "10"),
    PaperValue("example_3_6", UNBOUNDED, ITERATIONS, 10, "10"),
    PaperValue(
        "example_3_6",
        BACKTRACKING,
        FINAL_POINT,
        None,
        "the same point for both methods, near a non-degenerate local minimum",
    ),
    PaperValue("example_3_6", BACKTRACKING, FINAL_STEP, None, "not stated"),
    PaperValue("example_3_6", UNBOUNDED, FINAL_STEP, None, "not stated"),
    PaperValue("example_3_7", BACKTRACKING, ITERATIONS, 10**6, "10^6 (the full budget)"),
    PaperValue("example_3_7", BACKTRACKING, FINAL_POINT, None, "not stated"),
    PaperValue("example_3_7", BACKTRACKING, FINAL_STEP, None, "not stated"),
    PaperValue("example_3_7", UNBOUNDED, ITERATIONS, None, "much fewer than 10^6"),
    PaperValue(
        "example_3_7",
        UNBOUNDED,
        FINAL_POINT,
        None,
        "much closer to 0 than Backtracking GD's final point",
    ),
    PaperValue("example_3_7", UNBOUNDED, FINAL_STEP, None, "far above 1"),
    PaperValue("mexican_hat", TWO_WAY, SETTLE_ITERATION, 6, "about 6"),
)


def paper_values(example: str) -> list[PaperValue]:
    """The paper's entries for one experiment, in the order the report shows them."""
    return [entry for entry in PAPER_VALUES if entry.example == example]


def paper_value(example: str, method: str, quantity: str) -> PaperValue:
    """The one entry for (example, method, quantity); KeyError if the paper states none."""
    for entry in PAPER_VALUES:
        if (entry.example, entry.method, entry.quantity) == (example, method, quantity):
            return entry
    raise KeyError((example, method, quantity))
