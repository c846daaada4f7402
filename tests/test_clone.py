"""A clone tests itself (issue 13, item 7): what the tests read is inside the repository, the
recorded traffic with its licence beside it, and no file names a path outside the clone
(CI's clone has the steering folder `../shared` beside it; a user's has not)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.vectors import OPENAI_COMPATIBLE, vectors_dir

ROOT = Path(__file__).resolve().parent.parent
# a path out of the clone: the steering folder beside it, or this machine's own folders
OUTSIDE = re.compile(r"\.\./shared|/work/(main|shared)|\bparents?\[\s*[2-9]\s*\]")


def _code() -> list[Path]:
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py")]
    return [*files, ROOT / "pyproject.toml", ROOT / ".ci" / "run"]


def test_the_recorded_traffic_is_in_the_clone_with_its_licence() -> None:
    root = ROOT / "tests" / "data" / "vectors"
    assert vectors_dir() == root or vectors_dir().is_dir()  # TURNOUT_VECTORS may name another
    licence = (root / "LICENSE-pydantic-ai").read_text()
    assert "MIT License" in licence and "Pydantic" in licence
    for folder in (*OPENAI_COMPATIBLE, "anthropic", "google", "stream_close"):
        assert any((root / folder).glob("*.yaml")), folder


def test_no_file_reads_a_path_outside_the_clone() -> None:
    found = []
    for path in _code():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix in {".py", ".toml", ""} else line
            if OUTSIDE.search(code) and path != Path(__file__).resolve():
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
