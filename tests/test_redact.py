"""The one redaction every output goes through (``hptune.redact``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hptune.describe import next_commands
from hptune.redact import redact, redact_study_file


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # userinfo: the password goes, the user, host and database stay.
        ("postgresql://u:Secret1@h:5432/db", "postgresql://u:***@h:5432/db"),
        # ... whatever it holds: "/", spaces, ":" as written, percent-encoded "@".
        ("postgresql://u:pa/ss w:rd@h/db", "postgresql://u:***@h/db"),
        ("postgresql+psycopg://u:p%2Fa%20b%40c@h/db", "postgresql+psycopg://u:***@h/db"),
        ("mysql://u:@h/db", "mysql://u:***@h/db"),
        # A password in the query string, with other keys before and after it.
        ("postgresql://u@h/db?password=Secret1", "postgresql://u@h/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=Se cret&connect_timeout=3#x",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***&connect_timeout=3#x",
        ),
        ("http://h/api?token=T0k&x=1", "http://h/api?token=***&x=1"),
        ("postgresql://u@h/db?sslpassword=k", "postgresql://u@h/db?sslpassword=***"),
        # libpq's keyword form: to the next space, or quoted.
        ("host=h password=Secret1 dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'Sec ret' dbname=d", "host=h password = *** dbname=d"),
        # In a message: the rest of the line stays; two URLs, two passwords.
        ("cannot open mysql://u:a@h/x: refused", "cannot open mysql://u:***@h/x: refused"),
        ("a://u:p@h and b://v:q@h", "a://u:***@h and b://v:***@h"),
        # Nothing to hide: left alone.
        ("sqlite:///mlruns/optuna.db", "sqlite:///mlruns/optuna.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("train.epochs=3 n_passes=2", "train.epochs=3 n_passes=2"),
    ],
)
def test_redact_hides_every_form_of_password(text: str, shown: str) -> None:
    assert redact(text) == shown
    # Redacting again changes nothing (messages embed redacted URLs and are redacted again).
    assert redact(shown) == shown


def test_a_study_file_keeps_its_comments_when_every_password_is_found() -> None:
    text = "name: s  # mine\nstorage: postgresql://u:pa/ss word@h/db\n"
    assert redact_study_file(text) == "name: s  # mine\nstorage: postgresql://u:***@h/db\n"


@pytest.mark.parametrize(
    "text",
    [
        # A plain YAML value folded over two lines: the password is split in the text.
        "name: s\nstorage: postgresql://u:Fold-\n  ed-Secret@h/db\n",
        # A double-quoted value with an escape: the text spells the password otherwise.
        'name: s\nstorage: "postgresql://u:Esc\\x41ped-Secret@h/db"\n',
    ],
)
def test_a_study_file_whose_password_is_spelt_otherwise_is_rewritten(text: str) -> None:
    logged = redact_study_file(text)
    # Its values come back redacted, under a line that says why the comments are gone.
    assert logged.startswith("# hptune: rewritten to hide a password")
    assert "storage: postgresql://u:***@h/db" in logged
    assert "Secret" not in logged and "Fold" not in logged and "Esc" not in logged


def test_printed_commands_show_a_storage_password_as_stars_and_say_so() -> None:
    lines = next_commands(Path("s.yaml"), "b", "postgresql://u:pw1@h/db")
    assert (
        lines[0]
        == "continue: hptune optimize s.yaml --study-name b --storage 'postgresql://u:***@h/db'"
    )
    assert (
        lines[1]
        == "report: hptune export-report s.yaml --study b --storage 'postgresql://u:***@h/db'"
    )
    assert "put the storage password back" in lines[2]
    assert not any("pw1" in line for line in lines)
