"""Reports from run directories: Markdown summaries and plots (matplotlib, Agg backend)."""

from bitsmith.report.compare import compare_runs, group_points, pareto_front, run_point
from bitsmith.report.run_report import cost_markdown, plot_learning_curves, write_report

__all__ = ["compare_runs", "cost_markdown", "group_points", "pareto_front", "plot_learning_curves", "run_point",
           "write_report"]
