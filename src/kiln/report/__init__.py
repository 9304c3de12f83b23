"""The report: report.json under a versioned schema, and report.md for people."""

from kiln.report.markdown import render

REPORT_SCHEMA = "kiln.report/1"

__all__ = ["REPORT_SCHEMA", "render"]
