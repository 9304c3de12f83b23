"""The report's mixed-precision section: which units stayed in float, why, and the trade-off curve searched."""

from __future__ import annotations


def mixed_precision_block(compile_details: dict) -> tuple[dict | None, dict | None]:
    """(mixed_precision, data_split) from the compile details of any backend (TensorRT nests them in its graph)."""
    for where in (compile_details, compile_details.get("graph_precision") or {}):
        if where.get("mixed_precision"):
            return where["mixed_precision"], where.get("data_split")
    return None, None


def _tuning(point: dict) -> str:
    parts = []
    for name, m in (point.get("tuning") or {}).items():
        figures = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in m.items())
        parts.append(f"{name}: {figures}")
    return "; ".join(parts) or "–"


def markdown_lines(compile_details: dict) -> list[str]:
    block, split = mixed_precision_block(compile_details)
    if not block:
        return []
    search = block["search"]
    shipped = {"low": "all units in low precision (the budget held without fallback)",
               "mixed": f"mixed: {len(block['kept_fp32'])} of {block['units']} units kept in float"
                        + (" (their weights int8: as fast, and a smaller file)" if block.get("kept_weights") == "int8"
                           else ""),
               "high": f"all units in float ({block.get('why', '')})",
               "dynamic": "dynamic int8 (within budget, and faster than the static int8 graph)",
               "dynamic-mixed": f"dynamic int8 with {len(block['kept_fp32'])} of "
                                f"{(block.get('dynamic_search') or {}).get('units', '?')} quantized nodes kept float "
                                "(plain dynamic int8 missed the budget; the fastest recipe within it)"}[block["shipped"]]
    lines = ["## Mixed precision", "", f"Shipped: **{shipped}**."]
    if split:
        lines.append(f"Data: ranges from {split['calibration']['count']} calibration samples, search on "
                     f"{split['tuning']['count']} tuning samples ({split['tuning']['rule']}; sha256 "
                     f"{split['tuning']['sha256'][:12]}), the gate on the evaluation set once.")
    budget_note = "met" if block["budget_met_on_tuning"] else "NOT met by any point tried (the closest is shipped" + (
        " if no recipe below holds it)" if block.get("ladder") else ")")
    if search.get("skipped"):
        lines.append(f"Search: not run: {search['skipped']}.")
    else:
        lines.append(f"Search: {search['evaluations']} graphs evaluated in {search['seconds']:.1f} s"
                     f"{' (cut short by --search-seconds)' if search['timed_out'] else ''}; budget on the tuning split "
                     f"{budget_note}" + (f" (a point passes there within {block['tuning_share']:.0%} of the budget's "
                                         "slack)" if "tuning_share" in block else "") + ".")
    if block.get("smoothing_choice"):
        choice = block["smoothing_choice"]
        tried = ", ".join(f"{a}: {row['distance']:.3f}" for a, row in choice["candidates"].items())
        lines.append(f"SmoothQuant strength {choice['chosen']:g}, chosen on the tuning split before the search (the "
                     f"all-low-precision graph's distance to the budget at each strength tried: {tried}).")
    if block.get("p50_ms"):
        t = block["p50_ms"]
        lines.append(f"p50 on this host: low {t['low']:.3f} ms, chosen {t['chosen']:.3f} ms, float {t['high']:.3f} ms.")
    if block.get("int8_weights_rung"):
        rung = block["int8_weights_rung"]
        lines.append(f"The kept units with int8 weights (float activations): "
                     f"{'within budget' if rung['passed'] else 'over budget'} on the tuning split ({_tuning(rung)}).")
    if block["shipped"] in ("mixed", "dynamic-mixed"):
        lines += ["", "Kept in float (pass back with `--keep-fp32 NAME` to pin them): "
                  + ", ".join(f"`{n}`" for n in block["kept_fp32"]) + "."]
    rung = block.get("dynamic_search")
    if rung:
        lines.append("Dynamic int8 per unit: " + (rung["skipped"] if "skipped" in rung else
                     f"{len(rung['kept_fp32'])} of {rung['units']} nodes float within budget on the tuning split")
                     + f" ({rung.get('evaluations', 0)} graphs; the static search ranked "
                     f"{rung['ranked_by_the_static_search']} of {rung['units']}).")
    ladder = block.get("ladder")
    if ladder:
        lines += ["", "| recipe | within budget (tuning split) | p50 ms (this host) |", "|---|---|---|"]
        lines += [f"| {name}{' (shipped)' if name == ladder['chosen'] else ''} | {'yes' if row['passed'] else 'no'} | "
                  f"{row['p50_ms']:.3f} |" for name, row in ladder["candidates"].items()]
    curve, title = search["curve"], "units in float"
    if block["shipped"] == "dynamic-mixed" and (rung or {}).get("curve"):  # the points of the graph that shipped
        curve, title = rung["curve"], "nodes float in dynamic int8 (the rung that shipped)"
    lines += ["", f"| {title} | distance (1 = budget limit) | within budget | tuning split |", "|---|---|---|---|"]
    for point in curve:
        lines.append(f"| {point['kept']} | {point['distance']:.3f} | {'yes' if point['passed'] else 'no'} | "
                     f"{_tuning(point)} |")
    return lines + [""]


def island_block(compile_details: dict) -> dict | None:
    """TensorRT's fp32 islands (fallback/islands.py), nested in its graph's details; None where none were searched."""
    return (compile_details.get("graph_precision") or {}).get("fp32_islands")


def island_lines(compile_details: dict) -> list[str]:
    """The all-fp16 graph on the tuning split, and the units the island search kept in fp32 behind Casts."""
    block = island_block(compile_details)
    if not block:
        return []
    low = block["all_fp16"]
    lines = ["## fp32 islands in the fp16 graph", "",
             f"The fp16 graph with nothing but fragile ops kept in fp32: {_tuning(low)}: "
             f"{'within' if low['passed'] else 'over'} budget on the tuning split (a point passes there within "
             f"{block['tuning_share']:.0%} of the budget's slack)."]
    if not block["searched"]:
        return lines + ["No island was needed.", ""]
    search = block["search"]
    lines.append(f"Search over {block['units']} units ({block['nodes']} nodes: each node with arithmetic and the moves "
                 f"after it): {search['evaluations']} graphs in {search['seconds']:.1f} s"
                 f"{' (cut short by --search-seconds)' if search['timed_out'] else ''}; budget on the tuning split "
                 f"{'met' if block['budget_met_on_tuning'] else 'NOT met by any point tried (the closest is shipped)'}.")
    lines += ["", f"Kept in fp32 ({len(block['kept_units'])} units; `--keep-fp32 NAME` keeps that unit, moves included): "
              + ", ".join(f"`{n}`" for n in block["kept_units"]) + ".",
              "", "| units in fp32 | distance (1 = budget limit) | within budget | tuning split |", "|---|---|---|---|"]
    lines += [f"| {p['kept']} | {p['distance']:.3f} | {'yes' if p['passed'] else 'no'} | {_tuning(p)} |"
              for p in search["curve"]]
    return lines + [""]
