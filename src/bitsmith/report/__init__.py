"""Reports from run directories: Markdown summaries and plots (matplotlib, Agg backend)."""

from bitsmith.report.compare import compare_runs, group_points, pareto_front, run_point
from bitsmith.report.html import markdown_to_html
from bitsmith.report.run_report import (
    cost_markdown,
    plot_bit_widths,
    plot_layer_params,
    plot_learning_curves,
    plot_predicted,
    write_report,
)

__all__ = ["compare_runs", "cost_markdown", "group_points", "markdown_to_html", "pareto_front", "plot_bit_widths",
           "plot_layer_params", "plot_learning_curves", "plot_predicted", "run_point", "write_report"]
