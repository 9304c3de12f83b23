"""ONNX -> OpenVINO model, with failures that name the operators and the graph nodes that did not convert.

The ONNX route is the default because it measured as fast or faster than direct PyTorch conversion on the
test models (benchmarks/openvino_conversion.py; docs/benchmarks.md) and it converts the graph kiln has
already checked against the source model.
"""

from __future__ import annotations

import re
from pathlib import Path

from kiln._deps import require
from kiln.backends.openvino.session import openvino_message
from kiln.errors import ExportError
from kiln.quiet import quiet

CONVERSION = "ov.convert_model from the checked ONNX graph"

# OpenVINO 2026.4's summary lines: "No conversion rule found for operations: a, b" and
# "Failed conversion for operations: ..." (ops possibly prefixed with their ONNX domain)
_SUMMARY = re.compile(r"(No conversion rule found|Failed conversion|conversion failed)[^:]*:\s*(.+)", re.IGNORECASE)


def failed_ops(message: str) -> list[str]:
    ops: list[str] = []
    for match in _SUMMARY.finditer(message):
        ops += [op.strip(" .'\"") for op in match.group(2).split(",") if op.strip(" .'\"")]
    if not ops:  # older messages: "... operation Foo ..." / "OpType: Foo"
        ops = re.findall(r"(?:operation|op(?:erator)?[ _]?type)[^A-Za-z]+([A-Z][A-Za-z0-9]+)", message)
    return sorted(set(ops))


def nodes_of(onnx_path: Path, ops: list[str], limit: int = 5) -> list[str]:
    """Names of the nodes (subgraphs included) whose op type, with or without domain, is one of `ops`."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    wanted = set(ops)
    found: list[str] = []

    def walk(graph) -> None:
        for node in graph.node:
            qualified = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            if node.op_type in wanted or qualified in wanted:
                found.append(node.name or f"<unnamed {qualified}>")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


def convert_onnx(path: Path):
    ov = require("openvino", why="the OpenVINO backend")
    try:
        with quiet():
            return ov.convert_model(str(path))
    except Exception as exc:  # OpConversionFailure, GeneralFailure, RuntimeError, depending on the frontend
        text = str(exc)
        ops = failed_ops(text)
        nodes = nodes_of(path, ops) if ops else []
        if ops:
            what = f"operators {', '.join(ops)}" + (f" at nodes {', '.join(nodes)}" if nodes else "")
        else:
            what = openvino_message(text)
        raise ExportError(f"OpenVINO {ov.__version__.split('-')[0]} cannot convert the ONNX graph: {what}",
                          hint="use --target onnxruntime for this model, or --exporter to try the other exporter; "
                               "--debug shows OpenVINO's full message") from None
