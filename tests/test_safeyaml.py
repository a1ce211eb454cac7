"""A study file cannot exhaust the machine or lose what it says: limits, encodings, duplicates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hptune import safeyaml
from hptune.studyfile import load_study_file
from tests.conftest import invoke

LAUGHS = (
    "name: x\na: &a ["
    + ",".join(["lol"] * 9)
    + "]\n"
    + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
)
DEEP = "name: x\nv: " + "[" * 5000 + "]" * 5000 + "\n"
MANY_ALIASES = "name: x\nv: &v 1\nw: [" + ", ".join(["*v"] * 101) + "]\n"

HOSTILE = [
    # 350 bytes of anchors that expand to 10^9 values (grew to 6 GB in a minute before).
    pytest.param(
        "laughs.yaml",
        LAUGHS.encode(),
        r"laughs.yaml: its aliases \(\*name\) expand to",
        id="laughs",
    ),
    pytest.param(
        "big.yaml",
        b"#" * 99 + b"\n" + (b"#" * 99 + b"\n") * (safeyaml.MAX_BYTES // 100),
        r"big.yaml: larger than 1,000,000 bytes",
        id="big",
    ),
    pytest.param(
        "deep.yaml", DEEP.encode(), r"deep.yaml:2:\d+: values nested more than 40 deep", id="deep"
    ),
    pytest.param(
        "many.yaml", MANY_ALIASES.encode(), r"many.yaml:3:\d+: more than 100 aliases", id="aliases"
    ),
    pytest.param(
        "cycle.yaml",
        b"name: x\nv: &v [1, *v]\n",
        r"cycle.yaml:2:\d+: alias \*v is inside",
        id="cycle",
    ),
    pytest.param(
        "latin1.yaml",
        "name: x\ndescription: café\n".encode("latin-1"),
        r"latin1.yaml:2: not UTF-8 text \(byte 0xe9\)",
        id="latin1",
    ),
    pytest.param(
        "binary.yaml",
        b"name: x\n\x00\x01\x02\x03",
        r"binary.yaml:2: not a text file \(character U\+0000\)",
        id="binary",
    ),
    pytest.param(
        "twice.yaml",
        b"name: x\ntrain:\n  optimizer: sgd\nmodel: {width: 64}\ntrain:\n  epochs: 2\n",
        r"twice.yaml:5: train: written twice, on lines 2 and 5; .*keep one",
        id="duplicate-section",
    ),
    pytest.param(
        "inner.yaml",
        b"name: x\ntrain: {lr: 0.1, epochs: 2, lr: 0.2}\n",
        r"inner.yaml:2: train.lr: written twice, on line 2",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize("command", ["validate", "optimize"])
@pytest.mark.parametrize(("name", "content", "expected"), HOSTILE)
def test_a_hostile_study_file_is_one_error_line_and_writes_nothing(
    tmp_path: Path, command: str, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, out, err = invoke(command, str(path))
    # A user error: exit code 2, exactly one "error:" line naming the file, no traceback.
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), err
    assert re.search(expected, lines[0]), lines[0]
    # Nothing was written: neither store exists.
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_every_duplicate_key_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\nsearch_space:\n  lr: {type: float, low: 0.001, high: 0.1}\n"
        "  lr: {type: float, low: 0.01, high: 0.5}\nconfigurations:\n  - {width: 1}\n"
        "  - {width: 2, width: 3}\n"
    )
    code, _, err = invoke("validate", str(path))
    # Both mistakes, each with its key path and both lines, one line each.
    assert code == 2
    assert err.splitlines() == [
        f"error: {path}:4: search_space.lr: written twice, on lines 3 and 4; "
        "the second would replace the first: keep one",
        f"error: {path}:7: configurations[1].width: written twice, on line 7; "
        "the second would replace the first: keep one",
    ]


def test_anchors_and_merge_keys_within_the_limits_still_work(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\n"
        "search_space:\n"
        "  lr: &range {type: float, low: 0.001, high: 0.1, log: true}\n"
        "  weight_decay: {<<: *range, low: 0.0001}\n"  # a merge key, overridden: not a duplicate
    )
    config = load_study_file(path)
    # The alias and the merge key are read as YAML defines them.
    assert config.search_space["lr"].low == 0.001
    assert config.search_space["weight_decay"].low == 0.0001
    assert config.search_space["weight_decay"].log is True


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes("\ufeffname: x\ndescription: café\n".encode())
    # Windows editors write a BOM: still UTF-8, still a study file.
    assert load_study_file(path).description == "café"
