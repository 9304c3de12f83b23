"""Measurement: latency percentiles, throughput, load and first-inference time, memory."""

from kiln.bench.latency import PERCENTILES, measure, summarise

__all__ = ["PERCENTILES", "measure", "summarise"]
