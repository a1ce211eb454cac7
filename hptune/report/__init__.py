"""``hptune export-report``: a study's report as HTML, Markdown and CSV, from its stores.

Nothing is trained or recomputed from data: the Optuna storage gives the trials, MLflow (read
through ``hptune.tracking``) gives their curves, confusion matrices and test numbers.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hptune.errors import HptuneError

FORMATS = ("html", "md", "csv")


def safe_name(name: str) -> str:
    """``name`` (a study's, a parameter's: read from the stores, which others may write) as one
    file or folder name that stays where it is put: no ``/``, no ``..``, no leading dot."""
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", name)
    return "_" + name[1:] if name.startswith(".") else name or "_"


def check_out(out: Path) -> None:
    """Raise ``HptuneError`` when the report folder ``out`` cannot be made or written, before
    anything is read or written: a file of that name, a file on its path, a folder that
    refuses writes."""
    folder = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not folder.is_dir():
        where = "is a file" if folder == out else f"is under the file {folder}"
        raise HptuneError(f"report folder {out} {where}: name a folder (--out)")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise HptuneError(
            f"report folder {out}: {folder} cannot be written ({error.strerror}); name another"
            " with --out"
        ) from None


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    files: list[Path]


def export_report(
    study_name: str,
    storage: str,
    tracking_uri: str | None,
    experiment: str,
    out: Path,
    formats: tuple[str, ...] = FORMATS,
    log_to_mlflow: bool = True,
) -> ReportFiles:
    """Write the report of ``study_name`` into ``out`` and log it on the study's parent run.

    Raises:
        HptuneError: ``out`` cannot be written, or the study does not exist in ``storage``
            (nothing is written then).
    """
    from hptune.report import render
    from hptune.report.collect import collect
    from hptune.report.pareto import sections as pareto_sections
    from hptune.report.sections import build
    from hptune.tracking import StudyReader

    check_out(out)
    data = collect(study_name, storage, tracking_uri, experiment)
    sections = build(data)
    sections[1:1] = pareto_sections(data)  # after the summary; none for one objective
    title = f"hptune report: {study_name}"
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if "html" in formats:
        render.write_html(sections, title, out / "report.html")
        files.append(out / "report.html")
    if "md" in formats:
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        render.write_markdown(sections, title, out / "report.md", figures)
        files.append(out / "report.md")
    if "csv" in formats:
        files += render.write_csvs(sections, out)
    if log_to_mlflow and data.parent is not None:
        StudyReader(tracking_uri).log_folder(data.parent.run_id, out, "report")
    return ReportFiles(out, files)
