"""Which stage results can be reused, under which key, and how each is stored and read back.

    export   source bytes, data bytes, export and data settings, toolchain
             -> the checked graph, evaluation/calibration feeds, source outputs, preprocessing files
    baseline export key, threads, bench settings, host            -> the source model's timing
    compile  export key, plan, calibration kind                   -> the backend's files and settings
    validate compile key, accuracy budget                         -> accuracy and the sample output
    bench    compile key, bench settings, host                    -> latency and throughput
    analyse  bench key, report settings, baseline                 -> profile, roofline, batch sweep

Changing one setting changes only the keys that depend on it. A source given as a Python object or a
`package.module:callable` has no file to hash: it is loaded, and the module's classes' code, tensors and plain
settings are its fingerprint (kiln.exporters.module_digest); a torch.export program object is not cached.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln.artifact.cache import Cache, Entry, make_key, tree_digest
from kiln.calibration import Samples
from kiln.config import ExportConfig, Plan
from kiln.exporters.base import ExportRecord, SourceInfo
from kiln.exporters.graph import ExportedGraph
from kiln.signature import Signature
from kiln.toolchain import toolchain_versions

# Settings that shape the graph and the data fed to it (everything else is a later stage's concern).
# Bumped when what a stage computes changes without a kiln version change (every later key derives from the export
# key): 2 = shapes from data and probes (issue 14), opset conversion before Q/DQ, fp16 control flow;
# 3 = ai.onnx.ml lowered for OpenVINO, TensorRT and int8, OpenVINO static-shape fallback; 4 = OpenVINO fallback units
# named by their first op in graph order (issue 15); 5 = the calibration named in the key is always in the entry (an
# fp16 export with --calibration stored none, and an int8 export then hit that entry and failed); 6 = the fallback
# search ranks continuous budgets by the error each unit adds alone, ONNX Runtime auto's dynamic-int8 rung, TensorRT
# Q/DQ calibration read one shape group at a time (a compile cached before would be served unchanged); 7 = TensorRT
# graphs checked and searched with Q/DQ unfused on every host (fused, an AVX-512 VNNI CPU scored noise); 8 = a top-1
# budget searched on the expected disagreement rate (a plan with an explicit --tuning-margin keeps its key otherwise);
# 9 = ONNX Runtime's auto skips the static search where plain dynamic int8 already wins, and a top-1 search keeps
# every confident tuning sample; 10 = TensorRT's searched Q/DQ graphs keep the fp32 islands an over-budget fp16 rest
# needs, and find units behind an island's Casts; 11 = --keep-fp32 at fp16 keeps the moves after the named node;
# 12 = no Q/DQ on graph outputs.
STAGE_LOGIC = 12
EXPORT_FIELDS = ("inputs", "check_shapes", "constants", "zipmap_as_tensor", "task", "synthetic_data", "sequence_length",
                 "image_preprocessing", "exporter", "opset", "export_rtol", "export_atol", "trust_pickle", "trust_remote_code", "seed")


@dataclass
class StageCache:
    """The cache for one run, and what it did per stage (reported as hit / miss / off)."""

    cache: Cache | None
    reason: str = ""  # why it is off
    outcome: dict = field(default_factory=dict)

    @property
    def on(self) -> bool:
        return self.cache is not None

    def summary(self) -> dict:
        return {"enabled": self.on, "reason": self.reason or None,
                "root": str(self.cache.root) if self.cache else None, "stages": dict(self.outcome)}

    def run(self, stage: str, key: str | None, describe: str, compute, save, load):
        """Return load(entry) on a hit; else compute(), store it with save(value, files_dir) -> meta."""
        if self.cache is None or key is None:
            self.outcome[stage] = "off"
            return compute()
        with self.cache.lock(stage, key):
            entry = self.cache.lookup(stage, key)
            if entry is not None:
                try:
                    value = load(entry)
                    self.outcome[stage] = "hit"
                    return value
                except (OSError, KeyError, ValueError):
                    pass  # unreadable despite intact hashes (an older layout): recompute and replace
            value = compute()
            self.cache.put(stage, key, describe, lambda files: save(value, files))
            self.outcome[stage] = "miss"
            return value


def open_cache(config: ExportConfig, module) -> tuple[StageCache, str | None]:
    """The run's cache and the source file's fingerprint (None for a Python source, fingerprinted once loaded)."""
    if not config.cache:
        return StageCache(None, "--no-cache"), None
    path = Path(config.source)
    python = module is not None or not path.exists()  # a module object or package.module:callable
    cache = Cache()
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        cache.clean_tmp()
        # a Python source has no file to hash: the caller fingerprints the module once it is loaded (module_digest)
        fingerprint = None if python else _source_digest(path, cache.root / "hashes")
    except OSError as exc:
        return StageCache(None, f"the cache folder {cache.root} is not usable ({exc.strerror})"), None
    return StageCache(cache), fingerprint


def _source_digest(path: Path, memo: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".onnx":
        return tree_digest(path, memo) + "+" + _external_data_digest(path, memo)
    return tree_digest(path, memo)


def _external_data_digest(path: Path, memo: Path) -> str:
    """The external data files an ONNX file names (the loader refuses any outside its folder)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged file: the load stage reports it properly; no key then
        return "unreadable"
    names = sorted({entry.value for tensor in _get_all_tensors(model) if tensor.data_location == onnx.TensorProto.EXTERNAL
                    for entry in tensor.external_data if entry.key == "location"})
    parts = []
    for name in names:
        file = path.parent / name
        parts.append(f"{name}={tree_digest(file, memo) if file.is_file() else 'missing'}")
    return make_key({"external": parts})


def export_key(stages: StageCache, config: ExportConfig, fingerprint: str | None,
               synthetic_calibration: bool) -> str | None:
    if fingerprint is None or stages.cache is None:
        return None
    memo = stages.cache.root / "hashes"
    data = {}
    for name in ("calibration", "evaluation"):
        spec = getattr(config, name)
        if spec is not None:
            if not spec.path.exists():
                return None  # the load stage says what is wrong
            data[name] = {"digest": tree_digest(spec.path, memo), "limit": spec.limit}
    settings = config.model_dump(mode="json", include=set(EXPORT_FIELDS))
    return make_key({"stage": "export", "logic": STAGE_LOGIC, "source": fingerprint, "data": data, "settings": settings,
                     "synthetic_calibration": synthetic_calibration, "toolchain": toolchain_versions()})


def derived_key(stage: str, parent: str | None, **parts) -> str | None:
    return None if parent is None else make_key({"stage": stage, "parent": parent, **parts})


def compile_key(export: str | None, plan: Plan, calibration_kind: str | None, config: ExportConfig) -> str | None:
    return derived_key("compile", export, plan=plan.model_dump(mode="json"), calibration=calibration_kind,
                       compiled_cache=config.compiled_cache)


# -- storing and reading back ------------------------------------------------------------------------------------

def _save_feeds(feeds, prefix: str, arrays: dict) -> int:
    for i, feed in enumerate(feeds):
        for name, value in feed.items():
            arrays[f"{prefix}/{i}/{name}"] = value
    return len(feeds)


def _load_feeds(data, prefix: str, count: int) -> tuple[dict, ...]:
    feeds = [dict() for _ in range(count)]
    for key in data.files:
        head, _, rest = key.partition("/")
        if head == prefix:
            index, _, name = rest.partition("/")
            feeds[int(index)][name] = data[key]
    return tuple(feeds)


def _samples_meta(samples: Samples, prefix: str, arrays: dict) -> dict:
    count = _save_feeds(samples.feeds, prefix, arrays)
    return {"count": count, "kind": samples.kind, "description": samples.description,
            "synthetic": samples.synthetic, "labels": list(samples.labels)}


def _samples(meta: dict, data, prefix: str) -> Samples:
    return Samples(_load_feeds(data, prefix, meta["count"]), meta["kind"], meta["description"], meta["synthetic"],
                   tuple(meta["labels"]))


def save_prepared(prepared, files: Path) -> dict:
    graph = prepared.graph
    (files / "graph").mkdir()
    for path in graph.files:
        shutil.copyfile(path, files / "graph" / path.name)
    arrays: dict = {}
    meta = {
        "graph": {"signature": graph.signature.to_dict(), "record": {**graph.record.to_dict(),
                                                                      "attempts": list(graph.record.attempts)},
                  "check": graph.check, "hints": graph.hints, "seconds": graph.seconds},
        "evaluation": _samples_meta(prepared.evaluation, "evaluation", arrays),
        "calibration": {kind: _samples_meta(s, f"calibration-{kind}", arrays) for kind, s in prepared.calibration.items()},
        "references": _save_feeds(graph.reference_outputs, "references", arrays),
        "classifier": prepared.classifier, "primary": list(prepared.primary),
        "source_info": prepared.source_info.to_dict(), "extra_files": sorted(prepared.extra_files),
    }
    _save_feeds([prepared.example], "example", arrays)
    np.savez(files / "data.npz", **arrays)
    for name, path in prepared.extra_files.items():
        target = files / "extra" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return meta


def load_prepared(entry: Entry, prepared_type, work: Path):
    """The Prepared of a cached export. The graph is copied into `work` (later stages write beside it)."""
    meta = entry.meta
    (work / "export").mkdir(parents=True, exist_ok=True)
    graph_dir = entry.file("graph")
    for file in graph_dir.iterdir():
        shutil.copyfile(file, work / "export" / file.name)
    g = meta["graph"]
    record = ExportRecord(g["record"]["exporter"], g["record"]["opset"], tuple(g["record"]["attempts"]),
                          g["record"]["seconds"], tuple(g["record"]["notes"]))
    with np.load(entry.file("data.npz")) as data:
        references = _load_feeds(data, "references", meta["references"])
        evaluation = _samples(meta["evaluation"], data, "evaluation")
        calibration = {kind: _samples(m, data, f"calibration-{kind}") for kind, m in meta["calibration"].items()}
        example = _load_feeds(data, "example", 1)[0]
    graph = ExportedGraph(work / "export" / "model.onnx", Signature.from_dict(g["signature"]), record, g["check"],
                          references, g["hints"], g["seconds"])
    info = meta["source_info"]
    return prepared_type(graph, evaluation, calibration, meta["classifier"], tuple(meta["primary"]),
                         {name: entry.file(f"extra/{name}") for name in meta["extra_files"]},
                         SourceInfo(info["kind"], info["location"], info["sha256"], info["details"]), example, None)


def save_compiled(compiled, files: Path) -> dict:
    for path in compiled.files:
        target = files / path.relative_to(compiled.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return {"backend": compiled.backend, "model": compiled.model.relative_to(compiled.root).as_posix(),
            "signature": compiled.signature.to_dict(), "runtime_settings": compiled.runtime_settings,
            "details": compiled.details, "seconds": compiled.seconds}


def load_compiled(entry: Entry, work: Path):
    from kiln.backends.base import Compiled

    root = work / "compiled-cached"
    shutil.copytree(entry.path / "files", root)
    meta = entry.meta
    return Compiled(meta["backend"], root, root / meta["model"], Signature.from_dict(meta["signature"]),
                    meta["runtime_settings"], meta["details"], meta["seconds"])
