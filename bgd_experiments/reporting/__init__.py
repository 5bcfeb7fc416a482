"""Report step: run folders -> the paper's Tables 1-3 (md/csv/tex) and Figure 3 (png/pdf/csv).

``scan_runs`` reads the run folders; ``build_table1/2/3`` lay them on the paper's grid
(``paper_results.csv``) with the published value beside each cell; every artefact is a
:class:`Report` (sections, grids, notes, provenance; ``reporting.report``) that ``render_md``,
``render_csv`` and ``render_tex`` write; ``write_table`` and ``write_fig3`` write the files;
``build_table2_plus`` / ``write_table2_plus`` do experiment=table2_plus (both protocols, cost
to a target accuracy); ``bgd-report`` (``reporting.cli.main``) does all of it.
"""

from bgd_experiments.reporting.figures import fig3_curves, write_fig3
from bgd_experiments.reporting.paper import PaperCell, load_paper_results, paper_cells
from bgd_experiments.reporting.report import (
    Grid,
    Report,
    Section,
    render_csv,
    render_md,
    render_tex,
)
from bgd_experiments.reporting.runs import RunRecord, read_run, scan_runs
from bgd_experiments.reporting.table2_plus import build_table2_plus, write_table2_plus
from bgd_experiments.reporting.tables import (
    Cell,
    Table,
    build_table1,
    build_table2,
    build_table3,
    table2_ranking,
)
from bgd_experiments.reporting.writers import (
    provenance_line,
    table_csv,
    table_markdown,
    table_report,
    table_tex,
    write_table,
)

__all__ = [
    "Cell",
    "Grid",
    "PaperCell",
    "Report",
    "RunRecord",
    "Section",
    "Table",
    "build_table1",
    "build_table2",
    "build_table2_plus",
    "build_table3",
    "fig3_curves",
    "load_paper_results",
    "paper_cells",
    "provenance_line",
    "read_run",
    "render_csv",
    "render_md",
    "render_tex",
    "scan_runs",
    "table2_ranking",
    "table_csv",
    "table_markdown",
    "table_report",
    "table_tex",
    "write_fig3",
    "write_table",
    "write_table2_plus",
]
