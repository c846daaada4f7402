"""The layers of CONTRIBUTING.md, kept true: imports go downward only (cli -> server ->
gateway -> execute -> routing -> providers -> sim -> dialects | health | accounting -> config ->
model), no module cycles inside a package, dialects and the model stay pure. The contracts are
import-linter's, in pyproject.toml ([tool.importlinter]); this runs `lint-imports` on the
package, and on a throwaway copy with one injected back-edge, so the contracts provably bite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# the test extra installs it; without it the contracts cannot be checked here, and say so
pytest.importorskip(
    "importlinter", reason="import-linter is not installed: pip install -e '.[test]'"
)

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def lint_imports(src: Path, pyproject: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `turnout` package found in `src` (it reads the source: nothing is
    imported), with the contracts of `pyproject`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [*LINT_IMPORTS, "--no-cache", "--no-logo", str(pyproject)],
        cwd=pyproject.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_layer_contracts() -> None:
    result = lint_imports(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "injected", "broken"),
    [
        # a back-edge: the internal model (the bottom layer) importing the HTTP server
        ("model/types.py", "import turnout.server.app", "Layers import downward only"),
        # routing reaching up into the attempt loop (what routing.selector once did)
        ("routing/selector.py", "import turnout.execute", "Layers import downward only"),
        # the config schema carrying the simulator's schema again
        ("config/schema.py", "import turnout.sim.schema", "Layers import downward only"),
        # a cycle between two files of one package (as sim/app.py and sim/anthropic.py were)
        ("sim/pacing.py", "import turnout.sim.app", "No import cycles between the modules"),
        # a dialect doing I/O
        ("dialects/openai/shape.py", "import aiohttp", "Dialects and the internal model are pure"),
    ],
)
def test_an_injected_back_edge_breaks_a_contract(
    tmp_path: Path, module: str, injected: str, broken: str
) -> None:
    """A throwaway copy of the package with one bad import: lint-imports must fail on it."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "turnout",
        src / "turnout",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = src / "turnout" / module
    target.write_text(target.read_text() + f"\n{injected}  # injected back-edge\n")

    result = lint_imports(src, tmp_path / "pyproject.toml")
    assert result.returncode == 1, result.stdout + result.stderr
    # (one back-edge can break several contracts: everything below now reaches everything)
    summary, _, details = result.stdout.partition("Broken contracts")
    assert any(
        line.startswith(broken) and line.endswith("BROKEN") for line in summary.splitlines()
    ), result.stdout
    # and the report names the import that did it
    assert Path(module).stem in details, result.stdout
