"""The study file's JSON Schema: generated from the models, described, kept in the repository,
and agreeing with every study file (what editors check while a study is typed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hptune import registry
from hptune.schema import DESCRIPTIONS, SCHEMA_FILE, properties, study_schema
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILES = sorted([*ROOT.glob("studies/*.yaml"), *ROOT.glob("examples/**/*.yaml")])


def validator() -> jsonschema.Draft202012Validator:
    schema = study_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_what_hptune_schema_prints() -> None:
    code, out, err = invoke("schema")
    assert code == 0, err
    # Regenerate with `hptune schema > schema/study.schema.json` after changing the models.
    assert (ROOT / SCHEMA_FILE).read_text() == out


def test_every_property_has_a_description_and_every_description_a_property() -> None:
    schema = study_schema()
    paths = [path for path, _ in properties(schema)]
    # A field added to hptune/config.py needs its line in hptune.schema.DESCRIPTIONS.
    assert [path for path, node in properties(schema) if not node.get("description")] == []
    # ... and a removed field's description goes with it.
    assert sorted(set(DESCRIPTIONS) - set(paths)) == []


def test_registry_names_are_the_allowed_values() -> None:
    described = dict(properties(study_schema()))
    # Editors offer exactly the names validation accepts.
    assert described["model.activation"]["enum"] == list(registry.ACTIVATIONS)
    assert described["sampler.name"]["enum"] == list(registry.SAMPLERS)
    assert described["pruner.name"]["enum"] == list(registry.PRUNERS)


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_every_study_file_names_the_schema_and_validates_against_it(path: Path) -> None:
    text = path.read_text()
    # The first line points the YAML language server at the committed schema.
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (path.parent / first.partition("$schema=")[2].strip()).resolve()
    assert target == (ROOT / SCHEMA_FILE).resolve()
    errors = [error.message for error in validator().iter_errors(yaml.safe_load(text))]
    assert errors == []


@pytest.mark.parametrize(
    ("study", "fragment"),
    [
        ({"name": "s", "model": {"activation": "swish"}}, "'swish' is not one of"),
        ({"name": "s", "trian": {}}, "'trian' was unexpected"),
        ({"name": "s", "search_space": {"lr": {"type": "float", "low": "a"}}}, "not valid"),
        ({"name": "s", "search_space": {"learning_rate": {"type": "int"}}}, "learning_rate"),
        ({"description": "no name"}, "'name' is a required property"),
    ],
)
def test_the_schema_flags_what_validation_refuses(study: dict[str, Any], fragment: str) -> None:
    messages = [error.message for error in validator().iter_errors(study)]
    # What an editor underlines: an unknown name, an unknown key, a missing key.
    assert any(fragment in message for message in messages), messages


def test_the_schema_is_json_with_the_dialect_named() -> None:
    schema = json.loads((ROOT / SCHEMA_FILE).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
