"""The build farm: a matrix's cells run where their hardware is.

An executor takes the matrix's resolved cells and the source prepared once on the driver, and updates each cell's
record: `kiln.matrix.LocalExecutor` runs them here one after the other; `ray_executor.RayExecutor` (`--cluster`)
runs each as a Ray task on a node whose labels say it has the target's hardware (targets/labels.py), shipping the
prepared source and the built artifact as checked bytes (cells.py, transfer.py).
"""
