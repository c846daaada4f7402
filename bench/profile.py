"""Where turnout's serving thread spends its time under load: py-spy samples one turnout
worker (pinned to core 1, as in bench/run.py) while wrk drives c connections at it (core 0),
in front of the nginx upstream. Prints the functions with the most own time and the most
total time, and writes a flame graph (SVG) to bench/out/.

    pip install py-spy && python bench/profile.py --conns 8 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    BENCH,
    LOAD_CORE,
    OUT,
    SERVER_CORE,
    Launch,
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


def top(raw: Path, n: int) -> str:
    """The py-spy raw (collapsed) stacks summed into own and total time per function."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    lines = [f"{samples} samples", "", "own time:"]
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines += ["", "total time:"]
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--rev", help="profile this git commit (or dir:PATH, a src/ tree) instead of the work tree"
    )
    parser.add_argument(
        "--system", default="turnout", choices=("turnout", "floor"), help="what to profile"
    )
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    upstream_port = upstream_port_from_config()
    with tempfile.TemporaryDirectory(prefix="turnout-profile-") as tmp_name:
        tmp = Path(tmp_name)
        turnout = turnout_from(args.rev, tmp)
        conf = nginx_conf(tmp, "upstream", upstream_port, upstream_server(upstream_port))
        port = free_port()
        with running("nginx-upstream", Launch(nginx_argv(conf)), LOAD_CORE, upstream_port):
            launch = server_launch(args.system, port, upstream_port, tmp, turnout)
            with running(args.system, launch, SERVER_CORE, port) as proc:
                wrk(port, args.conns, 3)  # warm-up
                raw = OUT / "profile.txt"
                spy = subprocess.Popen(
                    ["py-spy", "record", "--format", "raw", "--nonblocking", "--rate", "200",
                     "--pid", str(proc.pid),
                     "--duration", str(int(args.seconds)), "--output", str(raw)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                result = wrk(port, args.conns, args.seconds)
                spy.wait()
    print(f"{args.system} at c={args.conns}: {result.rps:,.0f} req/s under the profiler")
    print(top(raw, args.top))
    print(f"\nstacks: {raw.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
