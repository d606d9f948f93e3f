"""MLflow helpers for what :class:`monai.handlers.MLFlowHandler` lacks: up-front reachability checks, parameters
with provenance, figures, parent/child (nested) runs, and run look-up by tag for resumable studies.

MONAI's handler logs ``engine.state.metrics`` per epoch (and optionally the loss per iteration); these helpers
are used beside it. All take an explicit :class:`mlflow.MlflowClient` (no global active-run state), so several
runs can be written from one process without ``mlflow.start_run`` stacks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import optional_import

from monai_synth.utils.io import ensure_writable_dir

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "TrackingUnavailableError",
    "PARENT_TAG",
    "resolve_tracking_uri",
    "check_tracking_uri",
    "make_client",
    "get_or_create_experiment",
    "create_run",
    "end_run",
    "log_params",
    "redact_path",
    "log_figure",
    "log_dict",
    "find_runs",
]

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs (the UI groups children under the parent)
_MAX_PARAM_LEN = 6000


class TrackingUnavailableError(ConnectionError):
    """The MLflow tracking URI cannot be reached or written."""


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def resolve_tracking_uri(
    tracking_uri: str | None, output_dir: str | os.PathLike | None = None, allow_insecure_http: bool = False
) -> str:
    """The tracking URI to use: ``tracking_uri`` if given, else ``sqlite:///<output_dir>/mlruns.db`` (absolute).

    ``$MLFLOW_TRACKING_URI`` is deliberately **not** read: runs log parameters and figures of patient data, and a
    variable left in a shell must not send them to a server nobody chose for this run (pass the URI explicitly).
    A plain ``http://`` server other than this machine is refused unless ``allow_insecure_http`` (the parameters and
    figures would cross the network unencrypted): use ``https://``.

    Raises:
        ValueError: for a plain path or ``file://`` URI (MLflow >= 3.13 no longer supports the file store), for a
            remote ``http://`` URI without ``allow_insecure_http``, and when nothing is given and ``output_dir`` is
            None.
    """
    uri = tracking_uri
    if uri and uri.startswith("http://") and not allow_insecure_http:
        from urllib.parse import urlparse

        host = (urlparse(uri).hostname or "").lower()
        if host not in _LOCAL_HOSTS:
            raise ValueError(
                f"`tracking_uri` {uri!r} is plain http to another machine: parameters and figures of patient data "
                "would cross the network unencrypted. Use https://, or pass allow_insecure_http=True if the network "
                "is trusted."
            )
    if not uri:
        if output_dir is None:
            raise ValueError(
                "Give `tracking_uri` or `output_dir` (the default store is sqlite:///<output_dir>/mlruns.db)."
            )
        uri = "sqlite:///" + str((Path(output_dir) / "mlruns.db").resolve())
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"`tracking_uri` {uri!r} is a file store, which MLflow no longer supports; use sqlite:///<path>/mlruns.db "
            "or an http(s):// tracking server."
        )
    return uri


def check_tracking_uri(tracking_uri: str, timeout: float = 5.0) -> None:
    """Check before training that ``tracking_uri`` answers (http/https: ``GET /health``; sqlite: the folder of the
    database is writable; other schemes: one ``search_experiments`` call).

    Raises:
        TrackingUnavailableError: naming the URI, with what to do.
    """
    hint = "Start the server / fix the URI, or pass on_unreachable='warn' to train without MLflow tracking."
    if tracking_uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            return  # the server answered (e.g. 401/404 behind a proxy): reachable
        except (urllib.error.URLError, OSError) as e:
            raise TrackingUnavailableError(f"MLflow tracking URI {tracking_uri!r} is unreachable ({e}). {hint}") from e
        return
    if tracking_uri.startswith("sqlite:///"):
        try:
            ensure_writable_dir(Path(tracking_uri[len("sqlite:///") :]).parent)
        except PermissionError as e:
            raise TrackingUnavailableError(f"MLflow tracking URI {tracking_uri!r} is not writable ({e}). {hint}") from e
        return
    try:
        make_client(tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # any backend error means we cannot track
        raise TrackingUnavailableError(f"MLflow tracking URI {tracking_uri!r} does not answer ({e}). {hint}") from e


def _private_sqlite(tracking_uri: str) -> None:
    """Create a ``sqlite:///`` store's file owner-only (0600) before MLflow opens it: it holds patient-data params."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    db = Path(tracking_uri[len("sqlite:///") :])
    if db.parent.is_dir() and not db.exists():
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))


def make_client(tracking_uri: str) -> MlflowClient:
    """An :class:`mlflow.MlflowClient` bound to ``tracking_uri`` (mlflow imported lazily); a new SQLite store is
    created owner-only (0600)."""
    mlflow, _ = optional_import("mlflow", descriptor="Install mlflow to track runs.")
    _private_sqlite(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id of ``name``, creating it when needed. With a ``sqlite:///`` store, artifacts go to
    ``<db folder>/mlruns`` (as MONAI's ``MLFlowHandler`` does).

    Raises:
        ValueError: when the experiment exists but is deleted.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        uri = str(client.tracking_uri)
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or choose another `experiment` name.")
    return exp.experiment_id


def create_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run (a child of ``parent_run_id`` when given) and return its id."""
    all_tags = {k: str(redact_path(v)) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    return client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id


def end_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    """Terminate a run with ``status`` in FINISHED / FAILED / KILLED."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"`status` must be one of ['FAILED', 'FINISHED', 'KILLED'], got {status!r}.")
    client.set_terminated(run_id, status)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def redact_path(value: Any) -> Any:
    """An absolute (or ``~``) local path becomes ``<local path 1a2b3c4d>``, 8 hex of its SHA-256: file and folder
    names often name patients or carry UIDs. The same path always gives the same id, so a site can match runs to
    its files (hash the path) while the tracking server learns nothing. Other values are returned unchanged; used
    for every MLflow param and tag."""
    text = str(value) if isinstance(value, (str, os.PathLike)) else None
    if text is None or "://" in text or not (os.path.isabs(text) or text.startswith("~")):
        return value
    return f"<local path {hashlib.sha256(text.encode()).hexdigest()[:8]}>"


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log (nested) parameters, flattened with dots; None becomes ``"None"``, long values are truncated, absolute
    local paths become opaque ids (:func:`redact_path`).

    Keys already logged with the same value are skipped (MLflow forbids changing a logged parameter).
    """
    mlflow_entities, _ = optional_import("mlflow.entities")
    existing = client.get_run(run_id).data.params
    items = []
    for k, v in _flatten(params).items():
        sv = str(redact_path(v))[:_MAX_PARAM_LEN]
        if k in existing:
            if existing[k] != sv:
                logger.warning("MLflow param %r already logged as %r; keeping it (new value %r).", k, existing[k], sv)
            continue
        items.append(mlflow_entities.Param(k, sv))
    for i in range(0, len(items), 100):  # log_batch accepts at most 100 params per call
        client.log_batch(run_id, params=items[i : i + 100])


def log_figure(client: MlflowClient, run_id: str, figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact (e.g. ``figures/confusion_matrix.png``)."""
    client.log_figure(run_id, figure, artifact_file)


def log_dict(client: MlflowClient, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
    """Log a JSON-serialisable dict as an artifact."""
    client.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)


def find_runs(
    client: MlflowClient, experiment_id: str, tags: Mapping[str, str], statuses: tuple[str, ...] | None = None
) -> list:
    """Runs of an experiment whose tags equal ``tags`` (and whose status is in ``statuses`` if given), newest first."""
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=flt,
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time DESC"],
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    if statuses is not None:
        runs = [r for r in runs if r.info.status in statuses]
    return runs
