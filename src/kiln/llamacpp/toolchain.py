"""The pinned llama.cpp: built once per machine from the `llama-cpp-python` sdist on the package index, cached
outside any checkout, never shipped inside an artifact.

Why this route (../shared/research/gguf_llamacpp.md): PyPI has no llama.cpp wheel, only the `llama-cpp-python`
sdist, which vendors one llama.cpp commit with its converter (`convert_hf_to_gguf.py` and its own gguf-py) and its
tools. One CMake build of that tree gives the tools kiln runs (llama-quantize, llama-imatrix, llama-perplexity,
llama-bench, llama-completion) and the shared `libllama` that the sdist's own ctypes bindings (`llama_cpp`, pure
Python, copied beside the build) load: one compile instead of the sdist's pip build plus a second one for the tools.

The build is `-march=native` (GGML_NATIVE, llama.cpp's default), so the cache is keyed by the CPU's ISA flags: a
cached build is never run on a CPU it was not built for.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ExportError, MissingDependencyError
from kiln.exporters.base import sha256_file

LLAMA_CPP_PYTHON = "0.3.36"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
COMMIT = "0c1e570"  # the llama.cpp commit the sdist vendors (its shallow git says build 1, -dirty: not recorded)
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench", "llama-completion")
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
               "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF")
BUILD_HINT = "run `kiln build-llama-cpp` once on this machine (about 10 minutes on 2 cores)"


def _isa_key() -> str:
    from kiln.targets import detect_host

    host = detect_host()
    text = json.dumps([host.arch, host.cpu_model, sorted(host.cpu_flags)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def home() -> Path:
    """Where this CPU's build lives: $KILN_LLAMA_CPP_DIR, else ~/.cache/kiln/llama.cpp/VERSION-ISAKEY. Not under
    $KILN_CACHE_DIR: that is the stage cache, which tests and CI point at a fresh folder, and a build is per machine."""
    if os.environ.get("KILN_LLAMA_CPP_DIR"):
        return Path(os.environ["KILN_LLAMA_CPP_DIR"])
    return Path.home() / ".cache" / "kiln" / "llama.cpp" / f"{LLAMA_CPP_PYTHON}-{_isa_key()}"


@dataclass(frozen=True)
class LlamaCpp:
    """A finished build: tools and libllama in bin/, the bindings in python/, the converter in convert/."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def tool(self, name: str) -> Path:
        return self.bin / name

    @property
    def converter(self) -> Path:
        return self.root / "convert" / "convert_hf_to_gguf.py"

    @property
    def python(self) -> Path:
        return self.root / "python"

    def versions(self) -> dict:
        return json.loads((self.root / "build.json").read_text())["versions"]

    def run(self, tool: str, args: list, *, what: str, timeout: float = 3600) -> str:
        """A tool run to completion; its output (stdout and stderr) returned, a failure one line with its last
        words."""
        result = subprocess.run([str(self.tool(tool)), *map(str, args)], capture_output=True, text=True,
                                timeout=timeout, errors="replace")
        output = result.stdout + result.stderr
        if result.returncode != 0:
            tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
            raise ExportError(f"{what}: {tool} exited {result.returncode}: {tail[-300:]}")
        return output


def find() -> LlamaCpp:
    """The build for this CPU, or a one-line error saying how to make it."""
    build = LlamaCpp(home())
    if not (build.root / "build.json").is_file():
        raise MissingDependencyError(f"llama.cpp {COMMIT} (llama-cpp-python {LLAMA_CPP_PYTHON}) is not built for "
                                     f"this CPU ({build.root} is missing)", hint=BUILD_HINT)
    return build


def bindings(build: LlamaCpp):
    """The sdist's low-level ctypes module `llama_cpp.llama_cpp`, loading this build's libllama."""
    os.environ["LLAMA_CPP_LIB_PATH"] = str(build.bin)
    if str(build.python) not in sys.path:
        sys.path.insert(0, str(build.python))
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError as exc:
        raise MissingDependencyError(f"llama.cpp's Python bindings do not import ({exc})",
                                     hint="pip install 'modelkiln[llamacpp]' (diskcache, sentencepiece)") from None
    if not Path(lib.__file__).is_relative_to(build.python):
        raise MissingDependencyError(f"another llama_cpp is imported ({lib.__file__}), not the one kiln built",
                                     hint="uninstall llama-cpp-python from this environment, or use another one")
    return lib


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(f"llama.cpp: {text}", file=sys.stderr, flush=True)


def _download(into: Path, quiet: bool) -> Path:
    _say(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist (77 MB) from the package index", quiet)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                             "--disable-pip-version-check", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(into)],
                            capture_output=True, text=True)
    sdist = into / SDIST
    if result.returncode != 0 or not sdist.is_file():
        raise MissingDependencyError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON}: "
                                     f"{(result.stderr.strip().splitlines() or ['no output'])[-1][:200]}",
                                     hint="the build needs the Python package index")
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise MissingDependencyError(f"{SDIST} has sha256 {digest[:16]}…, not the pinned {SDIST_SHA256[:16]}…",
                                     hint="check the package index you install from")
    return sdist


def _compile(source: Path, build: Path, quiet: bool) -> str:
    """CMake configure and build of the tools; returns the configure log (it names ggml's version)."""
    jobs = str(os.cpu_count() or 2)
    configure = subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *CMAKE_FLAGS],
                               capture_output=True, text=True)
    if configure.returncode != 0:
        tail = " | ".join(configure.stderr.strip().splitlines()[-3:])
        raise ExportError(f"llama.cpp: cmake configure failed: {tail[-300:]}")
    process = subprocess.Popen(["cmake", "--build", str(build), "-j", jobs, "--target", *TOOLS, "llama"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last, lines = 0.0, []
    for line in process.stdout:
        lines.append(line)
        step = re.match(r"\[(\d+)/(\d+)\]", line)
        if step and time.monotonic() - last > 30:
            last = time.monotonic()
            _say(f"compiling, step {step.group(1)} of {step.group(2)}", quiet)
    if process.wait() != 0:
        errors = [line.strip() for line in lines if "error" in line.lower()][:2] or lines[-2:]
        raise ExportError(f"llama.cpp: build failed: {' | '.join(e.strip() for e in errors)[-300:]}")
    return configure.stdout


def _assemble(unpacked: Path, cmake_build: Path, configure_log: str, staging: Path, seconds: float) -> None:
    vendor = unpacked / "vendor" / "llama.cpp"
    (staging / "bin").mkdir(parents=True)
    for path in (cmake_build / "bin").iterdir():
        if path.name in TOOLS or ".so" in path.name:
            shutil.copy2(path, staging / "bin" / path.name, follow_symlinks=False)
    (staging / "python").mkdir()
    shutil.copytree(unpacked / "llama_cpp", staging / "python" / "llama_cpp",
                    ignore=shutil.ignore_patterns("server", "lib"))
    (staging / "convert").mkdir()
    shutil.copy2(vendor / "convert_hf_to_gguf.py", staging / "convert" / "convert_hf_to_gguf.py")
    for folder in ("conversion", "gguf-py"):
        shutil.copytree(vendor / folder, staging / "convert" / folder)
    shutil.copy2(vendor / "LICENSE", staging / "LICENSE")
    ggml = re.search(r"ggml version:\s*(\S+)", configure_log)
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    record = {"versions": {"llama_cpp_python": LLAMA_CPP_PYTHON, "llama_cpp_commit": COMMIT,
                           "ggml": ggml.group(1) if ggml else None, "sdist_sha256": SDIST_SHA256},
              "cmake_flags": list(CMAKE_FLAGS), "native": True, "compiler": compiler[0] if compiler else None,
              "seconds": round(seconds, 1), "isa_key": _isa_key()}
    (staging / "build.json").write_text(json.dumps(record, indent=2) + "\n")


def build(force: bool = False, quiet: bool = False) -> LlamaCpp:
    """Download the pinned sdist, check its hash, build, and move the result into place in one rename. A second
    process waits for the first (a lock beside the build) and reuses its result."""
    target = home()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "build.json").is_file() and not force:
            return LlamaCpp(target)
        if shutil.which("cmake") is None or shutil.which("ninja") is None or shutil.which("c++") is None:
            raise MissingDependencyError("building llama.cpp needs cmake, ninja and a C++ compiler",
                                         hint="apt-get install cmake ninja-build g++")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch:
            scratch = Path(scratch)
            sdist = _download(scratch, quiet)
            with tarfile.open(sdist) as tar:
                tar.extractall(scratch, filter="data")
            unpacked = scratch / SDIST.removesuffix(".tar.gz")
            _say(f"building llama.cpp {COMMIT} ({', '.join(TOOLS)}, libllama) with {os.cpu_count()} jobs", quiet)
            log = _compile(unpacked / "vendor" / "llama.cpp", scratch / "cmake", quiet)
            staging = target.parent / f".{target.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            _assemble(unpacked, scratch / "cmake", log, staging, time.perf_counter() - started)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        _say(f"built in {time.perf_counter() - started:.0f} s: {target}", quiet)
        return LlamaCpp(target)
