"""The artifact: files, manifest with hashes, atomic publication."""

from kiln.artifact.manifest import (MANIFEST_NAME, MANIFEST_SCHEMA, SIGNATURE_NAME, file_entries, load_manifest,
                                    verify_files, write_json)
from kiln.artifact.publish import (check_output_path, check_parents, clean_leftovers, discard, missing_parents, publish,
                                   staging_dir)

__all__ = ["MANIFEST_NAME", "MANIFEST_SCHEMA", "SIGNATURE_NAME", "check_output_path", "check_parents", "clean_leftovers",
           "file_entries", "discard", "load_manifest", "missing_parents", "publish", "staging_dir", "verify_files", "write_json"]
