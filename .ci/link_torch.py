"""Make the main environment's torch and torchvision importable in the floors environment
without installing them again (several GB): symlinks to them, and to what they need that the
floors environment lacks, in one folder that a ``.pth`` file puts on ``sys.path`` (after the
floors environment's own packages, which therefore win).

Usage (with the floors environment's python, which has ``packaging``):
    python .ci/link_torch.py MAIN_SITE_PACKAGES FLOORS_SITE_PACKAGES
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
from pathlib import Path, PurePath

from packaging.requirements import Requirement

ROOTS = ("torch", "torchvision")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(main_site: Path, floors_site: Path) -> None:
    available = {norm(d.metadata["Name"]): d for d in metadata.distributions(path=[str(main_site)])}
    installed = {norm(d.metadata["Name"]) for d in metadata.distributions(path=[str(floors_site)])}
    needed: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = norm(todo.pop())
        if name in needed or name in installed:
            continue
        needed.add(name)
        for text in available[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    links = floors_site / "hptune-main-torch"
    links.mkdir(exist_ok=True)
    for name in sorted(needed):
        distribution = available[name]
        tops = {PurePath(str(file)).parts[0] for file in distribution.files or []}
        for top in tops - {".."}:  # (scripts in bin/ are not needed)
            link = links / top
            if not link.exists():
                link.symlink_to(main_site / top)
    (floors_site / "hptune-main-torch.pth").write_text(f"{links}\n")
    print(f"linked from {main_site}: {', '.join(sorted(needed))}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
