"""A team's MLflow: a real PostgreSQL (initdb into a temporary directory, pg_ctl on a loopback port), a real
`mlflow server` on it with proxied artifacts, `buyer-intent train` against it through MLFLOW_TRACKING_URI
(which promotes the first model to champion), and the champion loaded back through the registry.

Everything is started once per module and torn down even when a test fails. Without the PostgreSQL server
programs the module is skipped, except under CI on a machine where .ci/run could install them: there it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipeline.tracking.server import LocalPostgres, TrackingServer, find_pg_bin, free_port, mask_uri

# Laid over configs/default.yaml: a quicker model (what is tested is where it is tracked, not how good it is)
QUICK_CONFIG = """\
paths: {conversations: null}
features: {char_ngram_range: [1, 2]}
intent_model: {calibration_folds: 2}
purchase_model: {calibration_folds: 2}
"""
MODEL = "buyer-intent"
TEXTS = ["在吗", "这件有货吗 有货我就拍", "优惠券怎么用", "什么时候发货", "我要退货退款", "尺码偏大还是偏小", ""]


@pytest.fixture(scope="module")
def pg_bin() -> Path:
    found = find_pg_bin()
    if found is None:
        reason = "PostgreSQL server programs (initdb, pg_ctl) are absent: apt-get install postgresql (.ci/run does)"
        installable = shutil.which("apt-get") and (os.geteuid() == 0 or shutil.which("sudo"))
        if os.environ.get("CI") and installable:
            pytest.fail(f"{reason}; .ci/run could have installed them here")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def postgres(pg_bin):
    # Not pytest's tmp_path: as root, PostgreSQL runs as the `postgres` user, who cannot enter root's private
    # pytest directories. mkdtemp's directory is opened for traversal (0711) by LocalPostgres itself.
    root = Path(tempfile.mkdtemp(prefix="buyer-intent-pg-"))
    database = LocalPostgres(root, durable=False, pg_bin=pg_bin)
    try:
        database.start()
        yield database
    finally:
        try:
            database.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("team-tracking")


@pytest.fixture(scope="module")
def server(postgres, workdir):
    tracking = TrackingServer(
        postgres.uri, str(workdir / "artifacts"), port=free_port(), workers=1, log_file=workdir / "mlflow-server.log"
    )
    try:
        tracking.start()
        yield tracking
    finally:
        tracking.stop()


@pytest.fixture(scope="module")
def trained(server, workdir, small_messages_csv):
    """`buyer-intent train` as a user runs it, against the server: (run id, output)."""
    config = workdir / "quick.yaml"
    config.write_text(QUICK_CONFIG, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "BUYER_INTENT_CONFIG"}
    env["MLFLOW_TRACKING_URI"] = server.url
    done = subprocess.run(
        [str(Path(sys.executable).with_name("buyer-intent")), "train", "--config", str(config),
         "--data", str(small_messages_csv), "--model-dir", str(workdir / "model")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    match = re.search(r"run id: (\w+)", done.stdout)
    assert match, done.stdout
    return match.group(1), output


@pytest.fixture(scope="module")
def client(server):
    return mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)


@pytest.fixture
def sql(postgres):
    """A cursor on the backend store itself: what the server wrote is in PostgreSQL, not anywhere else."""
    import psycopg2

    connection = psycopg2.connect(postgres.uri)
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


@pytest.fixture
def restore_tracking_uri():
    """Loading through the registry sets MLflow's process-wide tracking URI (and MLFLOW_TRACKING_URI):
    put both back so later tests do not talk to a server that is gone."""
    from mlflow.tracking._tracking_service import utils

    old_uri, old_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield
    utils.set_tracking_uri(old_uri)
    if old_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old_env


def test_the_run_is_in_the_postgres_backed_store(trained, client, sql, workdir):
    run_id, _ = trained
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["split.test_fraction"] == "0.15"
    assert run.data.params["features.char_ngram_range"] == "[1, 2]"  # the quick config's
    assert 0.0 <= run.data.metrics["test_intent_macro_f1"] <= 1.0
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied by the server

    sql.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
    assert sql.fetchall() == [("FINISHED",)]
    sql.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'split.test_fraction'", (run_id,))
    assert sql.fetchall() == [("0.15",)]
    sql.execute("SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'test_intent_macro_f1'", (run_id,))
    assert sql.fetchall() == [(pytest.approx(run.data.metrics["test_intent_macro_f1"]),)]
    # the artifacts went through the server into its artifact root, the model among them
    assert list((workdir / "artifacts").rglob("MLmodel")), sorted(p.name for p in (workdir / "artifacts").rglob("*"))[:20]


def test_train_promoted_its_model_to_champion(trained, client, sql):
    run_id, output = trained
    assert "promoted to @champion" in output
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == run_id
    assert champion.tags.get("bundle_seal")
    sql.execute("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'", (MODEL,))
    assert sql.fetchall() == [(int(champion.version),)]


@pytest.mark.parametrize("reference", ["models:/buyer-intent@champion", None])
def test_the_champion_loads_back_through_the_registry(trained, server, client, workdir, reference, restore_tracking_uri):
    from pipeline.bundle import load_bundle
    from pipeline.config import Registry
    from pipeline.inference import Predictor, load_model

    champion = client.get_model_version_by_alias(MODEL, "champion")
    bundle = load_model(reference, registry=Registry(server.url, MODEL, "champion"))
    assert bundle.manifest["version"] == str(champion.version)
    assert bundle.manifest["name"] == MODEL
    remote = Predictor(bundle).predict(TEXTS)
    local = Predictor(load_bundle(workdir / "model")).predict(TEXTS)
    assert len(remote) == len(TEXTS)
    pd.testing.assert_frame_equal(remote, local)


def test_the_database_password_is_never_shown(trained, server, postgres):
    _, output = trained
    password = postgres.uri.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert len(password) >= 16
    assert password not in mask_uri(postgres.uri)
    assert password not in output
    assert password not in server.log_file.read_text(encoding="utf-8", errors="replace")
    command_line = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode(errors="replace")
    assert "mlflow" in command_line and password not in command_line
