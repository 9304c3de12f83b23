"""One matrix cell as a job a farm node runs: JSON and bytes in, JSON and bytes out.

The driver exports and checks the source once and ships it as the stage cache's own form of a prepared export
(`ship_prepared`); a node unpacks it, resolves the cell against its own hardware (so an AMX node times what a
stand-in would only validate), builds the cell with the same `build` as a local matrix into a scratch folder,
and returns the published folder packed (`run_cell`). The driver checks and writes it (`receive`).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from kiln.farm.transfer import pack, unpack

PREPARED_META = "meta.json"


def ship_prepared(prepared) -> tuple[bytes, str]:
    """The prepared export as bytes: its files and the JSON that describes them."""
    from kiln.stage_cache import save_prepared

    with tempfile.TemporaryDirectory(prefix="kiln-ship-") as scratch:
        root = Path(scratch)
        (root / "files").mkdir()
        meta = save_prepared(prepared, root / "files")
        (root / PREPARED_META).write_text(json.dumps({"prepared": meta, "source_bench": prepared.source_bench}))
        return pack(root)


def _load_prepared(data: bytes, sha256: str, scratch: Path, same_host: bool):
    """The shipped export, with the driver's timing of the source model only when this node is the driver's machine:
    a speedup against another machine's timing would be no figure at all."""
    from kiln.artifact.cache import Entry
    from kiln.pipeline import Prepared
    from kiln.stage_cache import load_prepared

    root = scratch / "prepared"
    root.mkdir()
    unpack(data, sha256, root)
    shipped = json.loads((root / PREPARED_META).read_text())
    prepared = load_prepared(Entry(root, shipped["prepared"]), Prepared, scratch / "work")
    return replace(prepared, source_bench=shipped["source_bench"] if same_host else None)


def cell_events(job: dict, prepared_bytes: bytes):
    """`run_cell` as events for the driver's progress (a Ray streaming task): where the cell started, then its
    result."""
    from kiln.targets import detect_host

    yield {"event": "started", "node": _node(detect_host())}
    yield {"event": "done", **run_cell(job, prepared_bytes)}


def _node(host) -> dict:
    return {"hostname": platform.node(), "pid": os.getpid(), "node_id": _ray_node_id(), "cpu_model": host.cpu_model}


def run_cell(job: dict, prepared_bytes: bytes) -> dict:
    """Build one cell here. `job`: {"config": ExportConfig as JSON, "budget", "debug", "prepared_sha256",
    "kiln_version", "driver_host"}. Returns {"record": the matrix record, "node": where it ran, "data"/"sha256": the
    published folder packed, when one was published}."""
    from kiln import __version__
    from kiln.config import ExportConfig
    from kiln.errors import KilnError, UsageError
    from kiln.matrix import cell_record, guarded_cell
    from kiln.pipeline import build, rejected_path, resolve_plan
    from kiln.progress import Progress
    from kiln.targets import detect_host

    started = time.perf_counter()
    host = detect_host()
    node = _node(host)
    name = Path(job["config"]["out"]).name
    root = scratch_root()
    root.mkdir(exist_ok=True)
    sweep_scratch(root)
    with tempfile.TemporaryDirectory(prefix=f"cell-{os.getpid()}-", dir=root) as scratch:
        scratch_path = Path(scratch)
        config = ExportConfig.model_validate({**job["config"], "out": str(scratch_path / name)})
        if job["kiln_version"] != __version__:  # a cell built by another kiln is not the artifact asked for
            error = UsageError(f"this node runs kiln {__version__}, the driver {job['kiln_version']}",
                               hint="install the same kiln on every node of the farm")
            return {"record": cell_record(config.target, config.precision, config.out, "failed", error.one_line(),
                                          error.exit_code), "node": node}
        prepared = _load_prepared(prepared_bytes, job["prepared_sha256"], scratch_path,
                                  host.fingerprint() == job["driver_host"])
        primary = config.budget.outputs or prepared.primary
        try:
            plan, backend = resolve_plan(config, host)
        except KilnError as error:
            return {"record": cell_record(config.target, config.precision, config.out, "refused", error.one_line(),
                                          error.exit_code), "node": node}

        def record(status, reason, code, report):
            return cell_record(plan.target, config.precision, config.out, status, reason, code, report=report,
                               primary=primary, budget=job["budget"])

        made = guarded_cell(config.out, lambda staged: build(config, plan, backend, host, staged, prepared,
                                                             Progress(enabled=False), started).report,
                            record, job.get("debug", False))
        result = {"record": made, "node": node}
        folder = {"ok": config.out, "rejected": rejected_path(config.out)}.get(made["status"])
        if folder is not None:
            result["data"], result["sha256"] = pack(folder)
        return result


def scratch_root() -> Path:
    return Path(tempfile.gettempdir()) / "kiln-farm"


def sweep_scratch(root: Path) -> list[Path]:
    """Remove the scratch folders of cells whose worker died: a cancelled cell's worker is killed (`ray.cancel`
    with force), so its own cleanup never runs; the next cell on the machine does it. Returns what it removed."""
    import shutil

    from kiln.artifact.publish import pid_alive

    removed = []
    for folder in sorted(root.glob("cell-*-*")) if root.is_dir() else []:
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        return None


def receive(result: dict, out: Path) -> dict:
    """Write a node's result under the driver's cell folder `out` (or `out`.rejected, by the cell's status: never a
    path the node names), checked and atomically; return its record with the driver's paths."""
    from kiln.artifact import clean_leftovers, discard, staging_dir
    from kiln.artifact.publish import publish
    from kiln.pipeline import rejected_path

    record = dict(result["record"])
    record["out"] = str(out)
    dest = {"ok": out, "rejected": rejected_path(out)}.get(record["status"])
    if dest is not None and "data" in result:
        clean_leftovers(dest)
        staged = staging_dir(dest)
        try:
            publish(unpack(result["data"], result["sha256"], staged), dest)
        except BaseException:
            discard(staged, [])
            raise
    return record
