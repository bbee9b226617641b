"""Rendering of evaluation results: Markdown tables, CSV, JSON and PNG figures.

The only place numbers are rounded. ``import spectra_rec.report`` does not import matplotlib;
figures import it (with the Agg backend) when they are drawn.
"""

from spectra_rec.report.tables import format_ci, headline_rows, headline_table, markdown_report, sig_mark
from spectra_rec.report.writer import write_report

__all__ = ["format_ci", "headline_rows", "headline_table", "markdown_report", "sig_mark", "write_report"]
