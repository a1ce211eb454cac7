"""What MLflow's UI shows first about a study, as text: the descriptions of the experiment, the
study's run, each trial's run and the registered model version, the trials' run names, and
parameter values as a person writes them. ``hptune.tracking`` stores them (MLflow keeps a run's
or an experiment's description in its ``mlflow.note.content`` tag); nothing here imports mlflow.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from hptune.runs_view import study_filter

SHOWN_DIGITS = 4  # significant digits of a sampled float (a log-uniform lr: 0.002739)
WRITTEN_DIGITS = 6  # a float with at most this many is shown in full, as written (0.0005)


def format_value(value: Any) -> str:
    """A parameter as a person writes it: ``0.3``, not ``0.30000000000000004`` (a float step's
    binary noise), and a sampled learning rate to 4 significant digits (``0.002739``). Optuna's
    storage keeps the exact value; other types are ``str(value)``."""
    if not isinstance(value, float):
        return str(value)
    written = f"{value:.12g}"  # 12 digits drop the noise of float arithmetic
    mantissa = written.split("e")[0].replace("-", "").replace(".", "").strip("0")
    return written if len(mantissa) <= WRITTEN_DIGITS else f"{value:.{SHOWN_DIGITS}g}"


def params_line(params: Mapping[str, Any]) -> str:
    """``activation=relu, lr=0.002739``: a trial's searched parameters on one line."""
    return ", ".join(f"{name}={format_value(value)}" for name, value in params.items())


def trial_run_name(number: int, state: str) -> str:
    """``trial-7``, or with a state that MLflow's status icon does not tell apart:
    ``trial-7 (pruned)``, ``trial-7 (failed)``, ``trial-7 (interrupted)``: MLflow draws the same
    red mark for a pruned (KILLED) run as for a failed one."""
    plain = state in ("", "complete", "running")
    return f"trial-{number}" if plain else f"trial-{number} ({state})"


def trial_outcome(
    tags: Mapping[str, str], objective: str, last: Mapping[str, float], epochs: int
) -> str:
    """How a trial ended, from the tags it ends with and its last epoch's metrics:
    ``complete after 15 epochs: val/accuracy 0.9123 (good fit)``, ``pruned after epoch 3:
    val/accuracy 0.71``, ``failed: loss is not finite at epoch 1``, ``interrupted``."""
    state = tags.get("hptune.state", "")
    value = f"{objective} {last[objective]:.4f}" if objective in last else ""
    if state == "complete":
        fit = tags.get("hptune.fit")
        return f"complete after {epochs} epochs: {value}" + (f" ({fit})" if fit else "")
    if state == "pruned":
        return f"pruned after epoch {tags.get('hptune.pruned_at_epoch', '?')}: {value}".rstrip(": ")
    if state == "failed":
        return f"failed: {tags.get('hptune.fail_reason', 'unknown reason')}"
    return state or "ended"


def trial_note(number: int, params: Mapping[str, Any], outcome: str) -> str:
    """A trial run's description: its parameters and its outcome, on one line."""
    searched = params_line(params) or "no searched parameters"
    return f"Trial {number}: {searched} → {outcome}"


def study_note(
    name: str,
    description: str | None,
    objective: str,
    how: str,
    sizes: Mapping[str, int],
    best: str | None = None,
) -> str:
    """The study run's description (Markdown): what it is, its objective and search, the data
    sizes, and its best trial so far (``best``: a line with a link, or None)."""
    # The best first: MLflow folds a long description after its first lines ("Show more").
    lines = [f"**Study {name}**" + (f": {description}" if description else "")]
    lines.append(best or "Best trial: none complete yet.")
    lines.append(f"Objective: {objective}; {how}.")
    lines.append("Data: " + ", ".join(f"{n:,} {split}" for split, n in sizes.items()) + " images.")
    return "\n\n".join(lines)


def best_line(number: int, objective: str, value: float, link: str) -> str:
    """``Best trial: [trial-12](link), val/accuracy 0.9123``."""
    return f"Best trial: [trial-{number}]({link}), {objective} {value:.4f}."


def model_note(
    input_shape: Sequence[int], normalize: str, classes: Sequence[str], study: str, trial: int
) -> str:
    """The registered model version's description: its input contract."""
    shape = ", ".join(str(n) for n in input_shape)
    scaling = {"minus_one_one": "pixel / 255 * 2 - 1 (range [-1, 1])", "zero_one": "pixel / 255"}
    return "\n\n".join(
        [
            f"Best trial ({trial}) of study {study}.",
            f"Input: float32 tensor of shape (N, {shape}), normalized as"
            f" {scaling.get(normalize, normalize)}; normalization is not inside the model.",
            f"Output: (N, {len(classes)}) logits for the classes, in order: {', '.join(classes)}.",
        ]
    )


def runs_page(
    experiment_id: str, study: str, metric: str | None, maximize: bool, view: str | None = None
) -> str:
    """The address, relative to MLflow's UI, of the study's runs table in model-training mode
    (MLflow 3 opens in its GenAI mode): its saved ``view`` (a key of ``hptune.runs_view``), which
    holds the rest; without one, its parent run and trials only (flat: MLflow lists children
    under a collapsed parent otherwise), best first."""
    if view is not None:  # (a search or an order in the address would override the view's)
        query = {"viewStateShareKey": view}
    else:
        query = {"searchFilter": study_filter(study)}
        if metric:
            query |= {"orderByKey": f"metrics.`{metric}`", "orderByAsc": str(not maximize).lower()}
    query["workflowType"] = "machine_learning"
    return f"#/experiments/{experiment_id}/runs?" + urllib.parse.urlencode(
        query, quote_via=urllib.parse.quote
    )
