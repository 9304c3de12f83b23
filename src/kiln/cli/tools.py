"""The commands around an artifact: engines and llama.cpp built, bundles verified, reports compared, the cache,
keys, targets and node labels."""

from __future__ import annotations

import json

from kiln.artifact.manifest import dumps
from kiln.errors import UsageError


def cmd_build_engine(args) -> int:
    from kiln.artifact import load_manifest, verify_files
    from kiln.backends.tensorrt.build_engine import BuildError, KitError, build
    from kiln.errors import ExportError

    manifest = load_manifest(args.artifact)
    if manifest["target"]["backend"] != "tensorrt":
        raise UsageError(f"{args.artifact} is a {manifest['target']['backend']} artifact, not a TensorRT one",
                         hint="export with --target tensorrt (or tensorrt-sm89, tensorrt-rtx, ...)")
    verify_files(args.artifact, manifest)
    kit = args.artifact / "tensorrt"
    try:
        result = build(kit, args.out or kit / "engines", args.builder, args.compute_capability)
    except KitError as exc:
        raise UsageError(str(exc), hint="the build kit was damaged or edited; export the artifact again") from None
    except BuildError as exc:
        raise ExportError(str(exc), hint="install TensorRT on the device (pip install tensorrt) or pass "
                                         "--builder tensorrt_rtx for RTX GPUs") from None
    if args.json:
        print(dumps(result))
    elif not args.quiet:
        for engine in result["engines"]:
            print(f"{engine['file']}: {engine['bytes'] / 2**20:.1f} MiB in {engine['build_seconds']:.1f} s "
                  f"({result['builder']} {result['tensorrt_version']})")
    return 0


def cmd_build_llama_cpp(args) -> int:
    """llama.cpp from the pinned llama-cpp-python sdist: downloaded (hash checked), built, cached per CPU."""
    from kiln.llamacpp.toolchain import build

    result = build(force=args.force, quiet=args.quiet or args.json)
    record = {"schema_version": "kiln.llama-cpp-build/1", "root": str(result.root),
              **json.loads((result.root / "build.json").read_text())}
    if args.json:
        print(dumps(record))
    elif not args.quiet:
        v = record["versions"]
        print(f"llama.cpp {v['llama_cpp_commit']} (llama-cpp-python {v['llama_cpp_python']}, ggml {v['ggml']}) "
              f"for this CPU: {result.root}")
    return 0


def cmd_verify(args) -> int:
    from kiln.artifact.bundle import extract_bundle
    from kiln.artifact.verify import verify

    result = verify(args.artifact, args.public_key)
    if args.extract is not None:
        if result["kind"] != "bundle":
            raise UsageError("--extract unpacks a bundle, and this is a folder", hint="give the .tar.gz")
        extract_bundle(args.artifact, args.extract)
        result["extracted_to"] = str(args.extract)
    if args.json:
        print(dumps(result))
    elif not args.quiet:
        print(f"{args.artifact}: ok, {result['files']} files ({result['bytes'] / 2**20:.1f} MiB) match the manifest; "
              f"signature {result['signature']}" + (f"; unpacked into {args.extract}" if args.extract else ""))
    return 0


def cmd_compare(args) -> int:
    from kiln.compare import Thresholds, compare_reports, load_report_file, remeasure, render_markdown
    from kiln.errors import RegressionError

    thresholds = Thresholds(max_slowdown=args.max_slowdown, max_cosine_drop=args.max_cosine_drop,
                            max_top1_drop=args.max_top1_drop, max_size_growth=args.max_size_growth)
    new, old = load_report_file(args.new), load_report_file(args.baseline)
    measured = remeasure(args.new, args.baseline) if args.remeasure else None
    result = compare_reports(new, old, thresholds, measured)
    text = render_markdown(result)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if not args.json and not args.quiet:
        print(text)
    if result["regressions"]:
        error = RegressionError(f"{len(result['regressions'])} regression(s): " + "; ".join(result["regressions"]),
                                hint="fix them, or loosen the thresholds (--max-slowdown, --max-cosine-drop, ...) "
                                     "if the change is intended")
        error.report = result  # --json prints the comparison itself: CI wants the numbers
        raise error
    if args.json:
        print(dumps(result))
    return 0


def cmd_cache(args) -> int:
    import time

    from kiln.artifact.cache import Cache

    cache = Cache()
    if args.cache_command == "prune":
        if args.older_than is None and args.max_size is None and not args.all:
            raise UsageError("kiln cache prune needs --older-than DAYS, --max-size GIB or --all",
                             hint="e.g. kiln cache prune --older-than 30")
        rows = cache.prune(args.older_than, None if args.max_size is None else int(args.max_size * 2**30), args.all)
        verb = "removed"
    else:
        rows, verb = cache.entries(), "holds"
    if args.json:
        print(json.dumps({"schema_version": "kiln.cache/1", "root": str(cache.root), "action": args.cache_command,
                          "entries": rows, "bytes": sum(r["bytes"] for r in rows)}, indent=2))
        return 0
    now = time.time()
    for r in sorted(rows, key=lambda r: r["last_used"]):
        print(f"{r['stage']:<9} {r['key'][:12]}  {r['bytes'] / 2**20:9.1f} MiB  used {_age(now - r['last_used']):>6} ago"
              f"  {r['describe']}")
    print(f"{cache.root} {verb} {len(rows)} entries, {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def cmd_keygen(args) -> int:
    from kiln.artifact.signing import keygen

    private, public = keygen(args.path)
    print(f"private key {private} (keep it secret; --sign-key), public key {public} (--public-key)")
    return 0


def cmd_targets(args) -> int:
    from kiln.backends import BACKENDS
    from kiln.targets import CATALOGUE, detect_host, host_can_run

    host = detect_host()
    rows = []
    for spec in CATALOGUE:
        ok, why = host_can_run(spec, host)
        rows.append({"name": spec.name, "aliases": list(spec.aliases), "backend": spec.backend, "device": spec.device,
                     "precisions": list(spec.precisions),
                     "available": spec.backend in BACKENDS or spec.backend == "llamacpp",  # language models only
                     "runs_here": ok, "why_not": None if ok else why, "description": spec.description})
    if args.json:
        print(json.dumps({"schema_version": "kiln.targets/1", "host": host.fingerprint(), "targets": rows}, indent=2))
        return 0
    fp = host.fingerprint()
    print(f"host: {fp['cpu_model']} ({fp['arch']}, {fp['physical_cores']} cores), ISA: {' '.join(fp['isa_flags'])}")
    print(f"{'target':<18} {'backend':<12} {'precisions':<26} {'here':<5} aliases / notes")
    for r in rows:
        mark = "yes" if r["runs_here"] else "no"
        note = ", ".join(r["aliases"]) + ("" if r["runs_here"] else f"  [{r['why_not']}]")
        print(f"{r['name']:<18} {r['backend']:<12} {','.join(r['precisions']):<26} {mark:<5} {note}")
    return 0


def cmd_node_labels(args) -> int:
    from kiln.targets.labels import this_node_labels

    print(",".join(f"{k}={v}" for k, v in this_node_labels().items()))
    return 0
