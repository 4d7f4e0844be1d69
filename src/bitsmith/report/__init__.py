"""Reports from run directories: Markdown summaries and plots (matplotlib, Agg backend)."""

from bitsmith.report.run_report import cost_markdown, plot_learning_curves, write_report

__all__ = ["cost_markdown", "plot_learning_curves", "write_report"]
