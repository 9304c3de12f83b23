"""Property-based fuzz tests (hypothesis) of everything kiln parses from users and reads back from disk.

1. `InputSpec.parse` / `ShapeRange.parse` (--input, --profile): any text gives a spec or a UsageError with a
   one-line message and a hint; valid specs parse to what they say and `InputSpec` round-trips through str().
2. `load_manifest` / `verify` on an artifact folder whose manifest.json is fuzzed (bytes, any JSON, edits of a
   real manifest) and whose files are added, removed, changed or replaced by links: only UsageError /
   VerificationError, and `verify` never says ok unless the folder holds exactly the listed files, never hashes
   a file outside the folder. Also `load_manifest` + `verify_files`, the check `kiln bench` and
   `kiln build-engine` run before using an artifact.
3. `load_report_file` / `compare_reports` / `render_markdown` (`kiln compare`) on fuzzed report.json.
4. `read_members` (and `verify`) on fuzzed bytes, damaged real bundles and tar.gz files built from random
   members: only UsageError, and every name returned is relative without '..' segments.

The real artifact (folder, bundle, report) is exported once per module by the CLI from the tiny ONNX MLP of
conftest. The first run of this file found eight bugs (compare crashing on odd but accepted reports, deeply
nested JSON, members hidden after a damaged tar header, a manifest path escaping in verify_files, multi-line
messages, a trailing newline accepted in names, an empty profile name); their tests now hold the fixes.

CI runs a fixed set of examples per test (derandomize=True, 200 examples) so runs are reproducible: hypothesis is
pinned in the dev extra (its version decides which examples a derandomised run draws), and the host section of the
real artifact is pinned (its ISA flags shifted the examples between CPUs). To search harder, or with the newest
hypothesis (`pip install -U hypothesis` in a scratch venv), locally:

    KILN_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz -q                    # more, still fixed examples
    KILN_FUZZ_EXAMPLES=5000 KILN_FUZZ_RANDOM=1 .venv/bin/pytest tests/fuzz -q  # new random examples each run
"""
