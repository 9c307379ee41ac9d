"""pipeline.tracking.server without a database: the password is masked wherever a URI is shown, kept off
`mlflow server`'s command line, the PostgreSQL programs are found where Debian puts them, and psycopg2 is
named for SQLAlchemy. (The real PostgreSQL and server: tests/tracking.)"""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.tracking import server as ts


@pytest.mark.parametrize(
    "uri, masked",
    [
        ("postgresql://mlflow:s3cr%2Ft@db.example:5432/mlflow", "postgresql://mlflow:***@db.example:5432/mlflow"),
        ("postgresql+psycopg2://u:p@s/s@127.0.0.1/db", "postgresql+psycopg2://u:***@127.0.0.1/db"),
        ("postgresql://u@host/db?password=hunter2&sslmode=require", "postgresql://u@host/db?password=***&sslmode=require"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_mask_uri_hides_the_password(uri, masked):
    assert ts.mask_uri(uri) == masked


def test_mask_uri_hides_a_password_containing_at_signs():
    assert ts.mask_uri("postgresql://u:a@b@c@host:5432/db") == "postgresql://u:***@host:5432/db"


def test_the_backend_uri_goes_through_the_environment_not_the_command_line():
    uri = "postgresql://mlflow:topsecret@127.0.0.1:5432/mlflow"
    command = ts.server_command("/srv/artifacts", port=5001, workers=1, allowed_hosts="mlflow.example")
    assert not any("topsecret" in part for part in command)
    assert command[1:3] == ["server", "--serve-artifacts"]
    assert command[command.index("--artifacts-destination") + 1] == "/srv/artifacts"
    assert command[command.index("--port") + 1] == "5001"
    assert command[command.index("--allowed-hosts") + 1] == "mlflow.example"
    env = ts.server_env(uri, base={"MLFLOW_TRACKING_URI": "http://elsewhere", "PATH": "/bin"})
    assert "topsecret" in env["MLFLOW_BACKEND_STORE_URI"] and env["PATH"] == "/bin"
    assert "MLFLOW_TRACKING_URI" not in env


def test_sqlalchemy_uri_names_the_installed_driver():
    try:
        import psycopg  # noqa: F401
        bare = "postgresql://"
    except ImportError:
        bare = "postgresql+psycopg2://"
    assert ts.sqlalchemy_uri("postgresql://u:p@h/db") == bare + "u:p@h/db"
    assert ts.sqlalchemy_uri("postgres://u:p@h/db") == bare + "u:p@h/db"
    assert ts.sqlalchemy_uri("postgresql+pg8000://u:p@h/db") == "postgresql+pg8000://u:p@h/db"


def test_a_tracking_server_refuses_a_backend_that_is_not_postgresql(tmp_path):
    server = ts.TrackingServer("sqlite:///x.db", str(tmp_path))
    with pytest.raises(ts.TrackingServerError, match="postgresql"):
        server.start(timeout_s=1)
    assert server.process is None


def _fake_bin(directory, tools=("initdb", "pg_ctl", "postgres")):
    directory.mkdir(parents=True)
    for tool in tools:
        path = directory / tool
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


def test_find_pg_bin_prefers_pg_bin_then_path(tmp_path):
    chosen = _fake_bin(tmp_path / "chosen")
    on_path = _fake_bin(tmp_path / "onpath")
    assert ts.find_pg_bin({"PG_BIN": str(chosen), "PATH": str(on_path)}) == chosen
    assert ts.find_pg_bin({"PATH": str(on_path)}) == on_path.resolve()
    incomplete = _fake_bin(tmp_path / "incomplete", tools=("initdb",))
    found = ts.find_pg_bin({"PG_BIN": str(incomplete), "PATH": str(tmp_path / "nothing")})
    assert found != incomplete  # without pg_ctl and postgres it is not a PostgreSQL installation


def test_local_postgres_without_the_programs_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "find_pg_bin", lambda environ=None: None)
    with pytest.raises(ts.TrackingServerError, match="apt-get install postgresql"):
        ts.LocalPostgres(tmp_path / "pg")


def test_artifacts_destination_keeps_uris_and_makes_directories_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ts.artifacts_destination("s3://bucket/mlflow") == "s3://bucket/mlflow"
    made = ts.artifacts_destination("team/artifacts")
    assert made == str(tmp_path / "team" / "artifacts") and os.path.isdir(made)
