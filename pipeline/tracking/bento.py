"""Copy a verified model bundle into the BentoML model store, for `bentoml build` and the service.

`buyer-intent export-bento [--model MODEL]` resolves the MLflow reference (the `champion` alias by
default), checks every file of the bundle against the checksums recorded at training time and the
bundle's seal (SHA-256 of its manifest) against the `bundle_seal` tag of the registered version, and
stores the directory as the BentoML model `buyer-intent:<version>-<seal>` with the MLflow name, version
and seal in its metadata. The service checks the copy against that seal again when it starts, so a
changed threshold in the stored manifest is refused.

Exporting the same model twice does not make a second copy: when the tag already exists and is the
latest `buyer-intent`, its tag is returned; when it exists but an other model was exported since, it
is stored again so that `buyer-intent:latest` is the one just exported.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from pipeline.bundle import ModelIntegrityError, bundle_seal, verify_bundle
from pipeline.inference import resolve_model

log = logging.getLogger(__name__)

BENTO_MODEL_NAME = "buyer-intent"
BUNDLE_SUBDIR = "bundle"


def bento_version(mlflow_version: str, seal: str) -> str:
    """`3-2298584e4b4e` for registered version 3, `local-2298584e4b4e` for a bundle directory."""
    version = re.sub(r"[^a-z0-9_.-]", "-", str(mlflow_version).lower()).strip("-._") or "local"
    return f"{version[:40]}-{seal[:12]}"


def export_bento(reference: str | None, registry) -> str:
    """Store the verified bundle behind `reference` as a BentoML model; returns its tag (`name:version`)."""
    import tempfile

    import bentoml
    from bentoml.exceptions import NotFound

    with tempfile.TemporaryDirectory(prefix="buyer-intent-export-") as download_dir:
        resolved = resolve_model(reference, registry, download_dir=download_dir)
        manifest = verify_bundle(resolved.directory, resolved.expected_seal)
        seal = resolved.expected_seal or bundle_seal(resolved.directory)
        tag = f"{BENTO_MODEL_NAME}:{bento_version(resolved.version, seal)}"

        try:
            existing = bentoml.models.get(tag)
        except NotFound:
            existing = None
        if existing is not None:
            latest = bentoml.models.get(f"{BENTO_MODEL_NAME}:latest")
            if latest.tag == existing.tag and existing.info.metadata.get("bundle_seal") == seal:
                verify_bundle(Path(existing.path) / BUNDLE_SUBDIR, seal)
                log.info("%s is already the latest %s in the BentoML store", tag, BENTO_MODEL_NAME)
                return str(existing.tag)
            bentoml.models.delete(tag)

        metadata = {
            "mlflow_name": resolved.name,
            "mlflow_version": str(resolved.version),
            "bundle_seal": seal,
            "source": reference or "models:/buyer-intent@champion",
            "created_at": str(manifest.get("created_at", "")),
            "package_version": str(manifest.get("package_version", "")),
            "labels": [str(label) for label in manifest.get("labels", [])],
            "thresholds": {str(k): float(v) for k, v in (manifest.get("thresholds") or {}).items()},
        }
        labels = {"mlflow_name": resolved.name, "mlflow_version": str(resolved.version)}
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
            target = Path(model.path) / BUNDLE_SUBDIR
            shutil.copytree(resolved.directory, target)
            try:
                verify_bundle(target, seal)  # the copy, before it is committed to the store
            except ModelIntegrityError:
                shutil.rmtree(target, ignore_errors=True)
                raise
        log.info("exported %s version %s (seal %s...) as BentoML model %s", resolved.name, resolved.version, seal[:12], tag)
        return str(model.tag)
