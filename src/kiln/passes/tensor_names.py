"""Plain names for a graph's internal tensors, for tools that derive new names from old ones.

ONNX Runtime's quantizer names what it adds by suffixing tensor names; tf2onnx names tensors after the TensorFlow
ops they fused (`a;b`, `a;b2`), and one such name plus a suffix can be another's, so the quantized graph reads a
[36] bias where a [N,36,1,172] activation was meant ("Invalid attribute perm {0, 2, 3, 1}, input shape = {36}", seen
on Spotify's basic-pitch). Node names and the graph's inputs and outputs keep their names: only what no user
refers to is renamed.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.HasField("g") or len(a.graphs) for n in graph.node for a in n.attribute)


def plain_tensor_names(src: Path, dst: Path) -> int:
    """Write `src` to `dst` with every internal tensor named `kiln_t<N>`; returns how many were renamed (0, and
    nothing written, for graphs with subgraphs, whose bodies may read outer names)."""
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    if _has_subgraphs(graph):
        return 0
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}
    for name in [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output]:
        if name not in kept and name not in names:
            names[name] = f"kiln_t{len(names)}"
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    for value in graph.value_info:
        value.name = names.get(value.name, value.name)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    if external:
        onnx.external_data_helper.load_external_data_for_model(model, str(src.parent))
    onnx.save(model, str(dst), save_as_external_data=external, all_tensors_to_one_file=True,
              location=dst.name + ".data", size_threshold=1024)
    return len(names)
