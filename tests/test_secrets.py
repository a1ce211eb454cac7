"""No password reaches what hptune shows or stores: each way to write one in a URL, against
each output (terminal, MLflow tags and params, the study file logged on the parent run, the
report's HTML, Markdown and CSV, error messages). A real PostgreSQL server (trust
authentication: any password opens it) holds the study, so every URL form really works."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from tests.conftest import invoke, study_yaml, write_idx
from tests.test_scale_out import Database, postgres  # noqa: F401 (a fixture)

STUDY = """name: sec
storage: {storage}
n_trials: 1
data: {{dataset: mnist}}
model: {{width: 8, depth: 1}}
train: {{epochs: 1, batch_size: 64}}
pruner: {{name: none}}
search_space:
  lr: {{type: float, low: 0.001, high: 0.01, log: true}}
"""


@dataclass(frozen=True)
class Form:
    """A way to put a password in a URL: the URL (``{address}``: host, port and database) and
    every spelling of the password that must not be shown."""

    url: str
    secrets: tuple[str, ...]
    tracking: bool = False  # MLflow's store too (in PostgreSQL, with the same password form)


FORMS = {
    "userinfo": Form("postgresql+psycopg://postgres:Pl41n-secret@{address}", ("Pl41n-secret",)),
    # "/", " " and "@" in a password are valid percent-encoded.
    "userinfo percent-encoded": Form(
        "postgresql+psycopg://postgres:S3%2Fcr%20et%40X9@{address}",
        ("S3%2Fcr%20et%40X9", "S3/cr et@X9", "S3/cr", "et@X9"),
    ),
    # SQLAlchemy also takes "/" and " " as written (in a YAML value, unquoted).
    "userinfo as written": Form(
        "postgresql+psycopg://postgres:Ra/w pw9x@{address}", ("Ra/w pw9x", "Ra/w", "pw9x")
    ),
    "query string": Form(
        "postgresql+psycopg://postgres@{address}?password=Qu3ry-secret&connect_timeout=10",
        ("Qu3ry-secret",),
        tracking=True,
    ),
}
OUTPUTS = (
    "terminal",
    "mlflow tags and params",
    "study file on the parent run",
    "report.html",
    "report.md",
    "summary.csv",
    "error message",
)


@dataclass
class Shown:
    """What one study run with a password in its URLs left to be read."""

    form: Form
    folder: Path
    outputs: dict[str, list[str]] = field(default_factory=dict)


def _url(form: Form, port: int, database: str) -> str:
    return form.url.format(address=f"127.0.0.1:{port}/{database}")


def _create_database(port: int, name: str) -> None:
    import psycopg

    address = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(address, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module", params=list(FORMS))
def shown(
    request: pytest.FixtureRequest,
    postgres: Database,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shown]:
    """Run a one-trial study with the form's URL as its storage (and tracking store), export
    its report, and provoke an error that names the storage; gather every output."""
    name = str(request.param)
    form = FORMS[name]
    tag = name.replace(" ", "_").replace("-", "_")
    port = int(make_url(postgres(f"probe_{tag}")).port or 0)  # (the server's port)
    _create_database(port, f"optuna_{tag}")
    folder = tmp_path_factory.mktemp(tag)
    write_idx(folder / "datasets" / "mnist", gz=True)
    storage = _url(form, port, f"optuna_{tag}")
    path = study_yaml(folder / "sec.yaml", STUDY.format(storage=storage))
    result = Shown(form, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HPTUNE_DATA_DIR", str(folder / "datasets"))
        patch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking = f"sqlite:///{folder / 'mlflow.db'}"
        if form.tracking:
            _create_database(port, f"mlflow_{tag}")
            tracking = _url(form, port, f"mlflow_{tag}")
            patch.setenv("MLFLOW_TRACKING_URI", tracking)
        code, out, err = invoke("optimize", str(path))
        assert code == 0, err
        report_code, report_out, report_err = invoke("export-report", str(path))
        assert report_code == 0, report_err
        # The same study with another search space: refused, naming the storage.
        _, _, conflict = invoke("optimize", str(path), "--set", "search_space.lr.high=0.02")
        # A server that does not answer, named by a URL of the same form.
        _, _, refused = invoke("optimize", str(path), "--storage", _url(form, port + 1, "x"))
        result.outputs["terminal"] = [out, err, report_out, report_err]
        result.outputs["error message"] = [conflict, refused]
        result.outputs |= _mlflow_outputs(tracking, folder)
    report = folder / "reports" / "sec"
    for file in ("report.html", "report.md", "summary.csv"):
        result.outputs[file] = [(report / file).read_text()]
    yield result


def _mlflow_outputs(tracking: str, folder: Path) -> dict[str, list[str]]:
    """Every tag and param of every run, read back from MLflow; the logged study file."""
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("sec")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    texts = [
        f"{k}={v}" for run in runs for k, v in (*run.data.tags.items(), *run.data.params.items())
    ]
    (parent,) = [run for run in runs if run.data.tags["hptune.role"] == "study"]
    logged = client.download_artifacts(parent.info.run_id, "sec.yaml", str(folder / "dl"))
    return {
        "mlflow tags and params": texts,
        "study file on the parent run": [Path(logged).read_text()],
    }


@pytest.mark.parametrize("output", OUTPUTS)
def test_no_output_shows_the_password(shown: Shown, output: str) -> None:
    texts = shown.outputs[output]
    joined = "\n".join(texts)
    # The output was read and names the storage (or its tracking store), password hidden...
    assert "127.0.0.1" in joined and "***" in joined, joined[-2000:]
    # ...and no spelling of the password is anywhere in it.
    assert [s for s in shown.form.secrets if s in joined] == []


def test_error_messages_hide_a_password_in_libpq_keyword_form(
    tmp_path: Path, mnist_dir: Path
) -> None:
    path = study_yaml(tmp_path / "s.yaml", "name: s\ndata: {dataset: mnist}\n")
    code, _, err = invoke("optimize", str(path), "--storage", "host=h password=Kw-secret dbname=d")
    # Not a URL: one error line, which names it with the password hidden.
    assert code == 2 and err.count("error:") == 1
    assert "host=h password=*** dbname=d" in err and "Kw-secret" not in err


def test_no_file_written_holds_the_password(shown: Shown) -> None:
    written = [p for p in shown.folder.rglob("*") if p.is_file() and p.name != "sec.yaml"]
    # The stores' artifacts, the report, the data cache: the study file alone holds it.
    assert any(p.name == "report.html" for p in written)
    holding = [p for p in written for s in shown.form.secrets if s.encode() in p.read_bytes()]
    assert holding == []
