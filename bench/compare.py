"""Which of two turnout revisions costs less CPU per request, despite this machine's drift.

    python bench/compare.py HEAD~1 HEAD          # or WORKTREE for the uncommitted tree
    python bench/compare.py HEAD WORKTREE --rounds 6 --seconds 5
    python bench/compare.py HEAD dir:/tmp/build/src   # a src/ tree as it is (an experiment)

Both revisions serve at once, pinned to the same core (1), each under its own wrk c=8 on
core 0, copies in A B B A order to cancel the small advantage of starting first. The kernel
splits the core between them, so a slow moment of the machine slows both alike: the ratio of
their requests/s is the inverse ratio of their CPU per request, steady to about 1% where two
runs of run.py taken a minute apart differ by 10-20%. Use it for "did this change help";
quote run.py's figures for anything else. Caveat: work on other threads (the ledger writer)
gets its own share of the core here, so a change to that work shows less than it is.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from run import (
    BENCH,
    LOAD_CORE,
    SERVER_CORE,
    Launch,
    Turnout,
    free_port,
    nginx_argv,
    nginx_conf,
    running,
    server_launch,
    turnout_from,
    upstream_port_from_config,
    upstream_server,
    wrk,
)


def build(rev: str, where: Path) -> Turnout:
    """A revision's src/ (or the work tree's, as it is now) to run from `where`."""
    where.mkdir()
    if rev.startswith("dir:"):  # a src/ tree as it is (an experiment: a compiled build, say)
        code = "import sys; from turnout.cli.main import main; sys.exit(main())"
        return Turnout((sys.executable, "-c", code), (("PYTHONPATH", rev[4:]),), rev)
    if rev != "WORKTREE":
        return turnout_from(rev, where)
    shutil.copytree(BENCH.parent / "src", where / "src")
    code = "import sys; from turnout.cli.main import main; sys.exit(main())"
    return Turnout((sys.executable, "-c", code), (("PYTHONPATH", str(where / "src")),), rev)


def loaded_at_once(ports: dict[str, int], seconds: float) -> dict[str, float]:
    """requests/s of each server, all under wrk c=8 at the same time."""
    results: dict[str, float] = {}

    def load(name: str) -> None:
        results[name] = wrk(ports[name], 8, seconds).rps

    threads = [threading.Thread(target=load, args=(name,)) for name in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="a git revision, WORKTREE, or dir:PATH (a src/ tree)")
    p.add_argument("b", help="a git revision, WORKTREE, or dir:PATH (a src/ tree)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    upstream = upstream_port_from_config()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-compare-"))
    tmp.chmod(0o755)
    names = ["a", "b", "b2", "a2"]
    revs = {"a": args.a, "b": args.b, "b2": args.b, "a2": args.a}
    try:
        with contextlib.ExitStack() as stack:
            conf = nginx_conf(tmp, "upstream", upstream, upstream_server(upstream))
            stack.enter_context(running("nginx", Launch(nginx_argv(conf)), LOAD_CORE, upstream))
            builds = {rev: build(rev, tmp / f"rev{i}") for i, rev in enumerate({args.a, args.b})}
            ports = {}
            for name in names:
                port = free_port()
                launch = server_launch("turnout", port, upstream, tmp, builds[revs[name]])
                stack.enter_context(running(f"turnout-{name}", launch, SERVER_CORE, port))
                ports[name] = port
            rps: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(-1, args.rounds):  # round -1 warms up
                results = loaded_at_once(ports, args.seconds if round_ >= 0 else 2.0)
                if round_ >= 0:
                    for name in names:
                        rps[name].append(results[name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a = [x + y for x, y in zip(rps["a"], rps["a2"], strict=True)]
    b = [x + y for x, y in zip(rps["b"], rps["b2"], strict=True)]
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(
        f"{args.b} / {args.a} requests/s (same core, same moments): median "
        f"{statistics.median(ratios):.3f}x (rounds {', '.join(f'{r:.3f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
