"""The model bundle on disk: a directory with the skops-serialised models and a manifest.

Nothing here unpickles. skops only rebuilds the types we allow, and every file's SHA-256 recorded in
`manifest.json` at training time is checked before anything is loaded: a changed byte means the model
is refused with a `ModelIntegrityError`, and the service refuses to start.

The manifest itself decides predictions (labels, the fallback, purchase and conversation thresholds),
so the bundle is *sealed*: its seal is the SHA-256 of `manifest.json`, which lists the SHA-256 of every
other file, and it is recorded outside the bundle (the registered version's `bundle_seal` tag, the
BentoML model's metadata). A bundle loaded from the registry or the BentoML store whose manifest, model
file or user dictionary changed by one byte is refused.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import skops.io as sio

from pipeline.estimators import LEGACY_SEGMENTER, JiebaTokenizer

MANIFEST = "manifest.json"
MODELS_FILE = "models.skops"
USER_DICT_FILE = "userdict.txt"
FORMAT_VERSION = 1

# Our own types that may be rebuilt from a model file, on top of what skops trusts by default.
TRUSTED_TYPES = frozenset(
    {
        "pipeline.estimators.CalibratedLinearClassifier",
        "pipeline.estimators.CompactTfidfVectorizer",
        "pipeline.estimators.FeatureSubset",
        "pipeline.estimators.JiebaTokenizer",
        "pipeline.estimators.EnglishTokenizer",
        "pipeline.estimators.TextNormalizer",
    }
)


class ModelIntegrityError(RuntimeError):
    """The model files do not match what was recorded when the model was trained."""


@dataclass
class ModelBundle:
    """Fitted models plus everything needed to use them the way they were validated."""

    intent: Any  # sklearn Pipeline: text -> intent probabilities
    purchase: Any | None  # sklearn Pipeline: text -> purchase probability
    conversation: Any | None  # sklearn Pipeline: feature dict -> expressed purchase intent
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.get("name", "buyer-intent")

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "local"))

    @property
    def thresholds(self) -> dict[str, float]:
        return self.manifest.get("thresholds", {})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _backup_of(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.old")


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE), so a model directory is never
    missing, not even for an instant; False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this kernel or file system does not exchange
        return False
    raise OSError(errno, os.strerror(errno), f"{a} <-> {b}")


def save_bundle(bundle: ModelBundle, directory: str | Path, user_dict_text: str | None = None) -> Path:
    """Write the bundle; the directory appears complete or not at all."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        models = {"intent": bundle.intent, "purchase": bundle.purchase, "conversation": bundle.conversation}
        sio.dump(models, staging / MODELS_FILE)
        files = [MODELS_FILE]
        if user_dict_text is not None:
            (staging / USER_DICT_FILE).write_text(user_dict_text, encoding="utf-8")
            files.append(USER_DICT_FILE)
        manifest = dict(bundle.manifest)
        manifest["format_version"] = FORMAT_VERSION
        segmenters = model_segmenters(models.values())
        if segmenters:  # the tokenizers' own record (their state), shown where people read the model
            manifest["segmenter"] = ", ".join(segmenters)
        manifest["sha256"] = {name: sha256_file(staging / name) for name in files}
        (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
        if directory.exists() and exchange_paths(staging, directory):
            shutil.rmtree(staging, ignore_errors=True)  # now the previous model
        elif directory.exists():  # no atomic exchange here: a kill between the renames leaves the old model as .<name>.old
            backup = _backup_of(directory)
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(staging, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bundle.manifest = manifest
    return directory


def model_segmenters(models) -> list[str]:
    """The segmenters (`name==version`) the word tokenizers of these fitted models were fitted with."""
    found = set()
    for model in models:
        if hasattr(model, "get_params"):
            found.update(getattr(value, "segmenter", LEGACY_SEGMENTER) for value in model.get_params(deep=True).values()
                         if isinstance(value, JiebaTokenizer))
    return sorted(found)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        backup = _backup_of(Path(directory))
        if not Path(directory).exists() and (backup / MANIFEST).is_file():
            raise ModelIntegrityError(f"{directory}: missing; a save was interrupted and the previous model is in {backup} "
                                      f"(rename it back to {directory}, or train again)")
        raise ModelIntegrityError(f"{directory}: not a model directory (no {MANIFEST})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{path}: manifest is not valid JSON ({exc})") from exc


def bundle_seal(directory: str | Path) -> str:
    """The SHA-256 of the manifest, which records every other file's SHA-256: one digest for the bundle."""
    return sha256_file(Path(directory) / MANIFEST)


def verify_bundle(directory: str | Path, expected_seal: str | None = None) -> dict[str, Any]:
    """Check every recorded checksum and, when given, the seal recorded outside the bundle."""
    directory = Path(directory)
    if expected_seal is not None and (directory / MANIFEST).is_file():
        actual = bundle_seal(directory)
        if actual != expected_seal:
            raise ModelIntegrityError(
                f"{directory / MANIFEST}: SHA-256 {actual[:12]}... differs from the seal {expected_seal[:12]}... recorded "
                "when the model was registered (the thresholds, labels or file checksums were changed); refusing to "
                "load. Re-register or re-export the model from its training run"
            )
    manifest = read_manifest(directory)
    recorded = manifest.get("sha256") or {}
    if MODELS_FILE not in recorded:
        raise ModelIntegrityError(f"{directory}: manifest records no checksum for {MODELS_FILE}")
    for name, digest in recorded.items():
        path = directory / name
        if not path.is_file():
            raise ModelIntegrityError(f"{directory}: {name} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ModelIntegrityError(
                f"{path}: SHA-256 {actual[:12]}... does not match the recorded {digest[:12]}...; refusing to load"
            )
    return manifest


def load_bundle(directory: str | Path, expected_seal: str | None = None) -> ModelBundle:
    directory = Path(directory)
    manifest = verify_bundle(directory, expected_seal)
    path = directory / MODELS_FILE
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:  # a pickle, or a corrupt file
        raise ModelIntegrityError(f"{path}: not a skops model file ({exc}); refusing to load it. Retrain, or restore the model") from exc
    unknown = untrusted - TRUSTED_TYPES
    if unknown:
        raise ModelIntegrityError(f"{path}: contains types that are not allowed: {sorted(unknown)}")
    models = sio.load(path, trusted=sorted(untrusted))
    return ModelBundle(models["intent"], models.get("purchase"), models.get("conversation"), manifest)
