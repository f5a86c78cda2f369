"""Where the time goes, from a py-spy ``raw`` profile (collapsed stacks, one per line).

``python -m benchmarks.profile_top bench/results/profiles/catchup.txt [N] [--only TEXT]``
prints the N functions with the most samples anywhere on the stack (inclusive) and at
the top of it (self), each as a share of all samples; ``--only`` keeps the stacks
that contain TEXT (a function or file) first.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def frames_of(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0] for f in stack.split(";")]
    return frames, int(count)


def top(path: Path, n: int = 30, only: str | None = None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip() or (only and only not in line):
            continue
        if not line.rstrip().rpartition(" ")[2].isdigit():
            continue  # a line cut short when the sampler stopped
        frames, count = frames_of(line)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples" + (f" with {only!r}" if only else "")]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in counter.most_common(n)]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    print(top(Path(argv[0]), int(argv[1]) if len(argv) > 1 else 30, only))


if __name__ == "__main__":
    main(sys.argv[1:])
