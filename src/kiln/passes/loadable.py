"""Whether ONNX Runtime loads a graph a pass just wrote: checked where the pass ran, so an error names the pass
instead of surfacing later as an invalid artifact. ONNX Runtime is the reference loader whatever the target."""

from __future__ import annotations

from pathlib import Path


def load_error(model_path: Path) -> str | None:
    """Why ONNX Runtime refuses to load the graph (its reason, without paths), or None."""
    import onnxruntime as ort

    from kiln.exporters.graph import ort_reason

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        return ort_reason(exc)
    return None
