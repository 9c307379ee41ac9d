"""Fixtures of the serving tests: a small trained model, the service in-process, and a real
`bentoml serve` on a free loopback port (started once per session, always terminated).

In-process tests import `serving.service` with a test config (tight limits, so timeouts and
concurrency limits can be hit quickly); the real server runs with the default config, one worker.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
READY_DEADLINE_S = 180  # model load on a busy 2-core machine; normally ~20 s

# Limits of the in-process service (configs/default.yaml otherwise).
TEST_SERVING = {
    "max_messages": 50,
    "max_chars": 200,
    "max_turns": 20,
    "max_conversations": 10,
    "max_body_mb": 1,
    "timeout_s": 2,
    "max_concurrency": 6,
    "max_batch_messages": 64,
    "workers": 1,
    "port": 3000,
}
TEST_FLAG = {"min_score": 0.5}  # the tiny test model is not calibrated for the default threshold


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(bentoml_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("BUYER_INTENT_MODEL", "BUYER_INTENT_BENTO_MODEL", "BUYER_INTENT_CONFIG", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update({"BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(REPO)})
    return env


def pytest_collection_modifyitems(session, config, items):
    session.serving_server_wanted = any(item.get_closest_marker("server") for item in items)


# ------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="session")
def serving_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def model_dir(serving_workdir) -> Path:
    """A real model trained on a small labelled frame (pipeline.training.train + save_bundle)."""
    from pipeline.bundle import save_bundle
    from pipeline.config import load_config
    from pipeline.data.labelled import load_labelled
    from pipeline.training.train import train
    from tests.serving.labelled import labelled_frame

    data_path = serving_workdir / "messages.csv"
    labelled_frame().to_csv(data_path, index=False)
    config = load_config(overrides={"paths.data": str(data_path)})
    result = train(config, load_labelled(data_path, None, config.split.min_examples_per_label))
    return save_bundle(result.bundle, serving_workdir / "model", result.user_dict_text)


@pytest.fixture(scope="session")
def test_config_path(serving_workdir) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    raw["serving"] = {**raw.get("serving", {}), **TEST_SERVING}
    raw["flag"] = {**raw.get("flag", {}), **TEST_FLAG}
    path = serving_workdir / "serving-test.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def tampered_copy(model_dir: Path, target: Path) -> Path:
    """A copy of the model with one byte of models.skops flipped."""
    shutil.copytree(model_dir, target)
    data = bytearray((target / "models.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / "models.skops").write_bytes(bytes(data))
    return target


# --------------------------------------------------------------------------------- in-process service


@pytest.fixture(scope="session")
def service_module(model_dir, test_config_path, serving_workdir):
    """`serving.service` imported in this process with the test model and config."""
    if "serving.service" in sys.modules:
        pytest.fail("serving.service was imported before its fixture set the environment")
    metrics_dir = serving_workdir / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    settings = {
        "BUYER_INTENT_MODEL": str(model_dir),
        "BUYER_INTENT_CONFIG": str(test_config_path),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # `bentoml serve` sets it; /metrics needs it
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    import serving.service

    yield serving.service
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def app_client(service_module):
    """The service's ASGI app (BentoML middlewares included) behind a TestClient, model warm."""
    from starlette.testclient import TestClient

    with TestClient(service_module.BuyerIntent.to_asgi(), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + READY_DEADLINE_S
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "in-process service not ready in time"
            time.sleep(0.1)
        yield client


# -------------------------------------------------------------------------------- the real server


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path):
        self.url = url
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready within {deadline_s} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def serve_command(port: int) -> list[str]:
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    return [bentoml_cli, "serve", "serving.service:BuyerIntent", "--host", "127.0.0.1", "--port", str(port)]


def start_server(env: dict[str, str], log_path: Path, port: int | None = None, before: list[str] | None = None) -> Server:
    """`bentoml serve serving.service:BuyerIntent` on 127.0.0.1, in its own process group; `before`
    is a command run first in the same process group (the server starts only if it succeeds)."""
    port = port or free_port()
    command = serve_command(port)
    if before:
        command = ["sh", "-c", f"{shlex.join(before)} && exec {shlex.join(command)}"]
    handle = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def serve_bundle(bundle_dir: Path, root: Path, **serving) -> Server:
    """`bentoml serve` of a model directory with configs/default.yaml, one worker and these `serving` settings
    (the fault suite's servers: each its own store, config and log under `root`); ready when returned."""
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    raw["serving"].update({"workers": 1, **serving})
    config = root / "serving.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    env = {**base_env(root / "bentoml"), "BUYER_INTENT_MODEL": str(bundle_dir), "BUYER_INTENT_CONFIG": str(config)}
    server = start_server(env, root / "server.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def one_worker_config(serving_workdir) -> Path:
    """configs/default.yaml with one worker: the default limits, one model load (a faster start)."""
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    raw.setdefault("serving", {})["workers"] = 1
    path = serving_workdir / "default-one-worker.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _server_process(model_dir, serving_workdir, one_worker_config):
    """Export the test model into a fresh BentoML store with `pipeline.tracking.bento.export_bento`, then
    serve it from there (BUYER_INTENT_BENTO_MODEL); both run in the server's process group, so this
    process's BentoML configuration is left alone and the export overlaps the in-process tests."""
    from pipeline.tracking.bento import bento_version
    from pipeline.bundle import bundle_seal

    tag = f"buyer-intent:{bento_version('local', bundle_seal(model_dir))}"
    env = base_env(serving_workdir / "bentoml")
    env["BUYER_INTENT_BENTO_MODEL"] = tag
    env["BUYER_INTENT_CONFIG"] = str(one_worker_config)
    export = [
        sys.executable, "-c",
        "import sys; from pipeline.tracking.bento import export_bento; print('exported', export_bento(sys.argv[1], None))",
        str(model_dir),
    ]
    server = start_server(env, serving_workdir / "server.log", before=export)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _tampered_server_process(model_dir, serving_workdir):
    """`bentoml serve` on a copy of the model with one byte flipped (it must refuse to start)."""
    bad = tampered_copy(model_dir, serving_workdir / "tampered-model")
    env = base_env(serving_workdir / "bentoml-tampered")
    env["BUYER_INTENT_MODEL"] = str(bad)
    server = start_server(env, serving_workdir / "tampered.log")
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_servers_early(request):
    """When server tests were collected, start both servers at the beginning of the session, so they
    start while the in-process tests run."""
    if getattr(request.session, "serving_server_wanted", False):
        request.getfixturevalue("_server_process")
        request.getfixturevalue("_tampered_server_process")
    yield


@pytest.fixture(scope="session")
def server(_server_process) -> Server:
    _server_process.wait_ready()
    return _server_process


@pytest.fixture(scope="session")
def tampered_server(_tampered_server_process) -> Server:
    return _tampered_server_process


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def post_raw(url: str, path: str, body: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{url}{path}", content=body, headers=headers, timeout=30)


def conversation(conversation_id: str = "c1", **extra) -> dict:
    """A chat where the buyer asks about stock and says they would buy, and nobody ordered."""
    return {
        "conversation_id": conversation_id,
        "messages": [
            {"role": "buyer", "text": "在吗 这款有货吗", "sent_at": "2026-11-20T21:13:05+08:00"},
            {"role": "agent", "text": "亲 有货的哦", "sent_at": "2026-11-20T21:14:00+08:00"},
            {"role": "买家", "text": "有货我就拍 包邮我就拍 我电话13812345678", "sent_at": "2026-11-20 21:15:00"},
        ],
        "ordered": False,
        **extra,
    }


def dumps(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")
