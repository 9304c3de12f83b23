"""The matrix's cells as Ray tasks, each placed on a node that has its target's hardware (`--cluster`).

Ray is imported here only (the `kiln[ray]` extra). Before anything is submitted, each cell's need (targets/labels.py)
is checked against the live nodes' labels and resources: Ray would leave a task no node can take pending forever, so
such a cell is recorded `no-hardware` at once, and a cell whose every fitting node left the cluster is cancelled and
recorded so when no replacement joins within the grace (`--node-grace`, LOST_GRACE by default). A crashed worker or a lost node is retried once (Ray's
system retries); an error in kiln's own code is the cell's failure and never stops the others. Results are written
under --out as they arrive; Ctrl-C cancels the cells still running (their child processes killed) and writes nothing
partial.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

from kiln._deps import require
from kiln.errors import KilnError, UsageError
from kiln.targets.labels import HardwareNeed, node_fits

RETRIES = 1  # a crashed worker or a dead node: the cell runs once more, on any node that fits
POLL_SECONDS = 5.0
LOST_GRACE = 60.0  # Ray waits for a node that fits; a replacement joins in seconds (3-5 s measured) or, with an
# autoscaler bringing up a cloud machine, minutes: --node-grace raises it


@dataclass
class Node:
    node_id: str
    labels: dict
    resources: dict


def live_nodes(ray) -> list[Node]:
    return [Node(n["NodeID"], dict(n.get("Labels") or {}), dict(n.get("Resources") or {}))
            for n in ray.nodes() if n.get("Alive")]


def unmet(need: HardwareNeed, nodes: list[Node]) -> str | None:
    """None when some node can run `need`, else the one-line reason."""
    misses = [node_fits(need, n.labels, n.resources) for n in nodes]
    if any(m is None for m in misses):
        return None
    lacking = sorted({m for m in misses if m})
    return (f"no node of the cluster ({len(nodes)} alive) has what this target needs ({need.describe()}); "
            f"the nodes lack {', '.join(lacking) or 'everything'}")


@dataclass
class _Submitted:
    cell: object
    need: HardwareNeed
    unfit_since: float | None = None


class RayExecutor:
    """Runs cells on a Ray cluster: `address` as for ray.init ("HOST:PORT"), or None for the cluster RAY_ADDRESS
    names or that runs here, else a new one here. `node_grace`: seconds a cell whose fitting nodes all left waits
    for one to join."""

    name = "ray"
    builds_elsewhere = True  # the driver resolves cells without checking its own packages: each node checks its own

    def __init__(self, address: str | None = None, node_grace: float = LOST_GRACE):
        self.address = address
        self.node_grace = node_grace

    def _connect(self):
        """Join the cluster; with no address and none running (and no RAY_ADDRESS), start one here whose node carries
        this machine's labels and the timing resource (a plain `ray.init()` has neither, and every timed cell would be
        no-hardware). Returns (ray, whether this call connected: then it disconnects too)."""
        ray = require("ray", why="--cluster (install kiln[ray])")
        if ray.is_initialized():
            return ray, False
        quiet = {"log_to_driver": False, "include_dashboard": False, "logging_level": "ERROR"}
        address = self.address or os.environ.get("RAY_ADDRESS")
        try:
            if address is not None:
                ray.init(address=address, **quiet)
                return ray, True
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                from kiln.targets.labels import BENCH_RESOURCE, this_node_labels

                ray.init(labels=this_node_labels(), resources={BENCH_RESOURCE: 1}, **quiet)
        except ConnectionError as error:
            raise UsageError(f"cannot reach the Ray cluster at {address} ({str(error).splitlines()[0][:160]})",
                             hint="check the address and that the head runs; with token auth (Ray's default) set "
                                  "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH") from None
        return ray, True

    def run(self, cells: list, prepared, progress, budget: dict, debug: bool) -> dict:
        """Run `cells` (matrix.PendingCell), updating their records in place (with the node each ran on); returns
        the run's facts for the comparison."""
        # Ray's driver prints its workers' errors ("Task failed ... will be retried") on sys.stdout, where --json
        # promises one JSON document: they go to stderr while the cluster is in use
        with contextlib.redirect_stdout(sys.stderr):
            return self._run(cells, prepared, progress, budget, debug)

    def _run(self, cells: list, prepared, progress, budget: dict, debug: bool) -> dict:
        from kiln import __version__
        from kiln.farm.cells import cell_events, ship_prepared
        from kiln.targets import detect_host, find_target
        from kiln.targets.labels import need_of

        ray, owns_connection = self._connect()
        began = time.perf_counter()
        pending: dict = {}
        try:
            nodes = live_nodes(ray)
            remote = ray.remote(cell_events)
            data, sha256 = ship_prepared(prepared)
            shipped = ray.put(data)
            del data
            common = {"budget": budget, "debug": debug, "prepared_sha256": sha256, "kiln_version": __version__,
                      "driver_host": detect_host().fingerprint()}
            for cell in cells:
                cell.record["node"] = None
                need = need_of(find_target(cell.plan.target), timed=cell.config.measure)
                reason = unmet(need, nodes)
                if reason is not None:
                    cell.record.update(status="no-hardware", reason=reason, exit_code=3)
                    progress.say(f"cell {cell.plan.target} {cell.config.precision}: no-hardware")
                    continue
                ref = remote.options(name=f"kiln:{cell.plan.target}-{cell.config.precision}",
                                     num_returns="streaming", num_cpus=need.num_cpus, num_gpus=need.num_gpus,
                                     resources=dict(need.resources) or None, label_selector=dict(need.labels) or None,
                                     max_retries=RETRIES, retry_exceptions=False
                                     ).remote({**common, "config": cell.config.model_dump(mode="json")}, shipped)
                pending[ref] = _Submitted(cell, need)
            progress.say(f"cluster: {len(nodes)} node(s); {len(pending)} cell(s) queued")
            self._collect(ray, pending, progress, debug, self.node_grace)
        except BaseException:  # Ctrl-C, or a failure here: the cells still running are cancelled, children killed
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            if owns_connection:
                ray.shutdown()
        return {"kind": self.name, "address": self.address, "nodes": len(nodes),
                "seconds": round(time.perf_counter() - began, 2)}

    @staticmethod
    def _collect(ray, pending: dict, progress, debug: bool, grace: float) -> None:
        """Events as they come: a cell started on a node, a cell done (its artifact written here at once)."""
        from kiln.farm.cells import receive

        board = _Board(len(pending))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            if not ready:
                _give_up_on_lost_hardware(ray, pending, progress, grace)
                continue
            events = ready[0]
            submitted = pending[events]
            cell = submitted.cell
            try:
                event = ray.get(next(events))
            except StopIteration:  # a task that ended without its result (cancelled)
                event = None
            except Exception as error:  # a worker crash that outlived its retry, a lost node, a cancelled task
                if debug:
                    raise
                last = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
                cell.record.update(status="failed", exit_code=1,
                                   reason=f"the cell's worker failed: {type(error).__name__}: {last}")
                event = None
            if event is not None and event["event"] == "started":
                board.started(cell, event["node"])
                progress.say(board.line(cell, "started"))
                continue
            del pending[events]
            if event is not None:
                try:
                    cell.record.update(receive(event, cell.config.out), node=event["node"])
                except KilnError as error:  # the driver could not check or write what arrived
                    cell.record.update(status="failed", exit_code=error.exit_code, reason=error.one_line(),
                                       node=event["node"])
                del event
            elif cell.record["status"] == "pending":
                cell.record.update(status="failed", exit_code=1, reason="the cell's task ended without a result")
            board.done(cell)
            progress.say(board.line(cell, cell.record["status"]))


class _Board:
    """Cells queued, running and done, per node, for the progress lines."""

    def __init__(self, total: int):
        self.queued, self.running, self.done_count = total, {}, {}
        self.node_of: dict = {}

    def started(self, cell, node: dict) -> None:
        key = (node.get("node_id") or node.get("hostname") or "?")[:8]
        previous = self.node_of.get(id(cell))
        if previous is None:
            self.queued -= 1
        else:  # a retry: it left its first node
            self.running[previous] -= 1
        self.node_of[id(cell)] = key
        self.running[key] = self.running.get(key, 0) + 1

    def done(self, cell) -> None:
        key = self.node_of.pop(id(cell), None)
        if key is None:
            self.queued -= 1
            key = "-"
        else:
            self.running[key] -= 1
        self.done_count[key] = self.done_count.get(key, 0) + 1

    def line(self, cell, what: str) -> str:
        nodes = sorted(set(self.running) | set(self.done_count) - {"-"})
        per_node = ", ".join(f"{n}: {self.running.get(n, 0)} running, {self.done_count.get(n, 0)} done" for n in nodes)
        return (f"cell {cell.plan.target} {cell.config.precision} {what}; {self.queued} queued; {per_node}")


def _give_up_on_lost_hardware(ray, pending: dict, progress, grace: float) -> None:
    """Cells no live node can run any more (their node left, no replacement joined within `grace` seconds):
    cancelled and recorded no-hardware, so the driver never waits forever."""
    nodes, now = live_nodes(ray), time.monotonic()
    for ref, submitted in list(pending.items()):
        reason = unmet(submitted.need, nodes)
        if reason is None:
            submitted.unfit_since = None
            continue
        submitted.unfit_since = submitted.unfit_since or now
        if now - submitted.unfit_since >= grace:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            del pending[ref]
            cell = submitted.cell
            cell.record.update(status="no-hardware", exit_code=3,
                               reason=f"the nodes that fitted left the cluster and none joined in {grace:g} s: "
                                      f"{reason}")
            progress.say(f"cell {cell.plan.target} {cell.config.precision}: no-hardware (its nodes left)")
