"""Print the floor of each of pyproject.toml's dependencies (and of its extras but ``dev``) as
``name==version``, one a line, for ``make floors`` (torch and torchvision left out: the floors
environment links the main environment's, see .ci/link_torch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

LINKED = {"torch", "torchvision"}


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    texts = list(project["dependencies"])
    texts += [text for name, more in extras.items() if name != "dev" for text in more]
    pins = []
    for text in texts:
        requirement = Requirement(text)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if requirement.name in LINKED:
            continue
        if len(lower) != 1:
            sys.exit(f"{text}: no single lower bound (>=) to test")
        extra = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extra}=={lower[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(Path(__file__).parents[1] / "pyproject.toml")))
