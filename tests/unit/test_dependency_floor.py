"""The locked security-relevant packages stay at or above their fixed releases (SECURITY.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {
    "bentoml": "1.4.8", "mlflow": "2.12.1", "scikit-learn": "1.5.0", "skops": "0.13.0", "joblib": "1.4.0",
    "starlette": "0.47.2", "aiohttp": "3.12.14", "h11": "0.16.0", "cryptography": "44.0.1", "jinja2": "3.1.6",
    "pyarrow": "14.0.1", "requests": "2.32.4", "urllib3": "2.5.0", "werkzeug": "3.0.6", "gunicorn": "22.0.0",
    "protobuf": "6.31.1",
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_locked_versions_are_at_or_above_the_fixed_releases():
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    locked = {package["name"]: package["version"] for package in lock["package"]}
    for name, floor in FLOORS.items():
        assert name in locked, f"{name} is no longer locked: update SECURITY.md"
        assert _version(locked[name]) >= _version(floor), f"{name} {locked[name]} is below {floor} (SECURITY.md)"
    table = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    for name in FLOORS:
        assert f"| {name} | {locked[name]} |" in table, f"SECURITY.md does not record the locked {name} {locked[name]}"
