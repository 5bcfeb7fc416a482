"""What the paper states for its deterministic experiments (Section 3), in one place.

Each entry is one quantity the paper reports for Examples 3.6, 3.7 (Section 3) and the
Mexican hat (Section 4.1, Figure 2(a)). ``value`` is the number the paper prints, or None
where it prints no single number; ``point`` is a final point's printed coordinates; ``text``
is the paper's statement as the report shows it. Every number here is the paper's, digit for
digit (the comments above each group quote the sentence it comes from).
:mod:`bgd_experiments.reporting.function_claims` puts our measured value beside each entry.
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
SETTLE_ITERATION = "iteration from which the step size is constant (Standard GD)"


@dataclass(frozen=True)
class PaperValue:
    """One quantity the paper reports for a deterministic experiment."""

    example: str  # "example_3_6", "example_3_7" or "mexican_hat": the report's section keys
    method: str
    quantity: str
    value: float | None  # the printed number; None when the paper only describes it
    text: str  # the paper's statement, as shown in the report's "paper" column
    point: tuple[float, ...] | None = None  # a printed point's coordinates, digit for digit


PAPER_VALUES: tuple[PaperValue, ...] = (
    # Section 3, Example 3.6: "After 10 steps, both algorithms ... arrive at the same point
    # (0.09325947,-0.09325947)"; no learning rate is printed.
    PaperValue("example_3_6", BACKTRACKING, ITERATIONS, 10, "10"),
    PaperValue("example_3_6", UNBOUNDED, ITERATIONS, 10, "10"),
    PaperValue(
        "example_3_6",
        BACKTRACKING,
        FINAL_POINT,
        None,
        "(0.09325947, -0.09325947), the same for both methods, "
        "very close to a non-degenerate local minimum",
        (0.09325947, -0.09325947),
    ),
    PaperValue("example_3_6", BACKTRACKING, FINAL_STEP, None, "not stated"),
    PaperValue("example_3_6", UNBOUNDED, FINAL_STEP, None, "not stated"),
    # Section 3, Example 3.7: "After 10^6 steps, Backtracking GD arrives at the point
    # (0.00111797, 0.00111802) with learning rate 1. On the other hand, only after 89 steps,
    # Unbounded Backtracking GD already arrives at a better point (0.00025327, 0.00025327)
    # with learning rate 90544.63441298596 much bigger than 1."
    PaperValue("example_3_7", BACKTRACKING, ITERATIONS, 10**6, "10^6 (the full budget)"),
    PaperValue(
        "example_3_7",
        BACKTRACKING,
        FINAL_POINT,
        None,
        "(0.00111797, 0.00111802)",
        (0.00111797, 0.00111802),
    ),
    PaperValue("example_3_7", BACKTRACKING, FINAL_STEP, 1, "1"),
    PaperValue("example_3_7", UNBOUNDED, ITERATIONS, 89, "89"),
    PaperValue(
        "example_3_7",
        UNBOUNDED,
        FINAL_POINT,
        None,
        "(0.00025327, 0.00025327), a better point than Backtracking GD's",
        (0.00025327, 0.00025327),
    ),
    PaperValue(
        "example_3_7",
        UNBOUNDED,
        FINAL_STEP,
        90544.63441298596,
        "90544.63441298596, much bigger than 1",
    ),
    # Section 4.1 (Figure 2(a)): "Two-way Backtracking GD stablises to Standard GD in only
    # 6 iterates".
    PaperValue(
        "mexican_hat",
        TWO_WAY,
        SETTLE_ITERATION,
        6,
        '6 ("stablises to Standard GD in only 6 iterates", of the run(s) in Fig. 2(a); '
        "no share of starts stated)",
    ),
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
