"""Reports from run directories: Markdown summaries and plots (matplotlib, Agg backend)."""

from bitsmith.report.run_report import plot_learning_curves, write_report

__all__ = ["plot_learning_curves", "write_report"]
