"""MLflow hardening: explicit tracking URI, no plain http to other machines, no local paths, owner-only store."""

from __future__ import annotations

import pytest

from monai_synth.handlers import mlflow_extras as mx


def test_the_environment_variable_is_not_a_silent_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://somebody-elses-server.example")
    assert mx.resolve_tracking_uri(None, tmp_path) == "sqlite:///" + str((tmp_path / "mlruns.db").resolve())
    with pytest.raises(ValueError, match="output_dir"):
        mx.resolve_tracking_uri(None)


@pytest.mark.parametrize("uri", ["http://10.0.0.5:5000", "http://mlflow.hospital.org", "http://example.com/x"])
def test_plain_http_to_another_machine_is_refused(uri):
    with pytest.raises(ValueError, match="https"):
        mx.resolve_tracking_uri(uri)
    assert mx.resolve_tracking_uri(uri, allow_insecure_http=True) == uri


@pytest.mark.parametrize("uri", ["http://localhost:5000", "http://127.0.0.1:8080", "https://mlflow.hospital.org"])
def test_local_http_and_https_are_accepted(uri):
    assert mx.resolve_tracking_uri(uri) == uri


def _sha8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    "value,expected",
    [
        (
            "/home/ward7/patients/Jane_Doe/study.json",
            f"<local path {_sha8('/home/ward7/patients/Jane_Doe/study.json')}>",
        ),
        ("~/data/x.npz", f"<local path {_sha8('~/data/x.npz')}>"),
        ("relative/name.json", "relative/name.json"),
        ("sqlite:////abs/mlruns.db", "sqlite:////abs/mlruns.db"),
        (3, 3),
        (None, None),
    ],
)
def test_redact_path(value, expected):
    assert mx.redact_path(value) == expected


def test_params_and_tags_hold_no_absolute_paths_and_the_store_is_owner_only(tmp_path):
    uri = mx.resolve_tracking_uri(None, tmp_path)
    client = mx.make_client(uri)
    assert (tmp_path / "mlruns.db").stat().st_mode & 0o077 == 0
    exp = mx.get_or_create_experiment(client, "e")
    run_id = mx.create_run(client, exp, "r", tags={"source": str(tmp_path / "Jane_Doe")})
    mx.log_params(client, run_id, {"data": {"path": str(tmp_path / "Jane_Doe" / "train.npz")}, "lr": 0.1})
    run = client.get_run(run_id)
    assert run.data.params["data.path"].startswith("<local path ") and run.data.params["lr"] == "0.1"
    assert run.data.tags["source"] == mx.redact_path(str(tmp_path / "Jane_Doe"))
    text = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert str(tmp_path) not in text and "Jane_Doe" not in text
    assert (tmp_path / "mlruns.db").stat().st_mode & 0o077 == 0
