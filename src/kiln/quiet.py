"""Silence the chatter of third-party tools (prints, warnings, log records) while they run.

Exporters, fusion scripts and quantizers write progress meant for their own developers; kiln's
output stays readable and its JSON stays parseable. Errors still propagate as exceptions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

_LOGGERS = ("", "torch", "torch.onnx", "onnxruntime", "onnxruntime.transformers", "onnxscript", "transformers", "nncf")


@contextlib.contextmanager
def quiet():
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
