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
# "Conversion is failed for: Conv-16, ReduceMean-16" (op types with their opset)
_SUMMARY = re.compile(r"(No conversion rule found|Failed conversion|conversion failed|Conversion is failed)[^:\n]*:[ \t]*(.+)",
                      re.IGNORECASE)


def failed_ops(message: str) -> list[str]:
    ops: list[str] = []
    for match in _SUMMARY.finditer(message):
        ops += [re.sub(r"-\d+$", "", op.strip(" .'\"")) for op in match.group(2).split(",") if op.strip(" .'\"")]
    if not ops:  # older messages: "... operation Foo ..." / "OpType: Foo"
        ops = re.findall(r"(?:operation|op(?:erator)?[ _]?type)[^A-Za-z]+([A-Z][A-Za-z0-9]+)", message)
    return sorted(set(ops))


def nodes_of(onnx_path: Path, ops: list[str], limit: int = 3) -> tuple[list[str], list[str]]:
    """Names of the nodes (subgraphs included) whose op type, with or without domain, is one of `ops`, and the op
    types of the control-flow nodes (If, Loop, Scan) whose bodies hold any of them."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    wanted = set(ops)
    found: list[str] = []
    bodies: set[str] = set()

    def walk(graph, inside: tuple[str, ...]) -> None:
        for node in graph.node:
            qualified = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            if node.op_type in wanted or qualified in wanted:
                found.append(node.name or f"<unnamed {qualified}>")
                bodies.update(inside)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, inside + (node.op_type,))
                for sub in attr.graphs:
                    walk(sub, inside + (node.op_type,))

    walk(model.graph, ())
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else []), sorted(bodies)


def _first_reason(message: str) -> str:
    """OpenVINO's first explanation line after 'FrontEnd API failed with GeneralFailure:' (or similar)."""
    lines = [line.strip() for line in message.splitlines()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("FrontEnd API failed with") and "OpConversionFailure" not in line and lines[i + 1]:
            return lines[i + 1][:200]
    before_summary = lines[:lines.index("Summary:")] if "Summary:" in lines else []
    return next((line[:200] for line in reversed(before_summary) if line and not line.startswith("--")), "")


def scalar_if_conditions(path: Path) -> tuple[Path, int]:
    """ONNX's If takes any single-element condition, and torch.onnx writes it as [1, 1]; OpenVINO's If wants rank
    0 or 1 ("Rank of If condition input must be equal to 0 or 1"). Each main-graph If gets its condition reshaped
    to a scalar, in a copy beside `path` (external data resolves from the same folder). Returns (graph, count)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    ifs = [n for n in model.graph.node if n.op_type == "If" and n.input and n.input[0]]
    if not ifs:
        return path, 0
    shape = "kiln_scalar_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.int64), shape))
    nodes = []
    for index, node in enumerate(model.graph.node):
        if node in ifs:
            scalar = f"{node.input[0]}_kiln_scalar_{index}"
            nodes.append(helper.make_node("Reshape", [node.input[0], shape], [scalar], name=f"kiln_if_condition_{index}"))
            node.input[0] = scalar
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    rewritten = path.with_name(path.stem + ".openvino-input.onnx")
    onnx.save(model, str(rewritten))
    return rewritten, len(ifs)


def convert_onnx(path: Path):
    ov = require("openvino", why="the OpenVINO backend")
    source, _ = scalar_if_conditions(path)
    try:
        with quiet():
            return ov.convert_model(str(source))
    except Exception as exc:  # OpConversionFailure, GeneralFailure, RuntimeError, depending on the frontend
        text = str(exc)
        ops = failed_ops(text)
        nodes, bodies = nodes_of(path, ops) if ops else ([], [])
        if ops:
            what = f"operators {', '.join(ops)}" + (f" at nodes {', '.join(nodes)}" if nodes else "")
            if bodies:
                what += f" (inside {'/'.join(bodies)} bodies, which OpenVINO's ONNX frontend types without the shapes " \
                        f"the branches see at run time)"
            reason = _first_reason(text)
            what += f": {reason}" if reason else ""
        else:
            what = openvino_message(text)
        raise ExportError(f"OpenVINO {ov.__version__.split('-')[0]} cannot convert the ONNX graph: {what}",
                          hint="use --target onnxruntime for this model, or --exporter to try the other exporter; "
                               "--debug shows OpenVINO's full message") from None
