"""The static HTML report of a bench: `build_report(bench_dir) -> Path` writes `report.html`."""

from mechscope.report.html import build_report

__all__ = ["build_report"]
