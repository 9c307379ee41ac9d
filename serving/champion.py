"""`python -m serving.champion`: is there a model to serve? (used by `make serve`)

Exit 0 and print the version when the registry has a model under the `champion` alias, exit 3 when it
has none (`make serve` then trains one), exit 1 on any other problem (an unreachable tracking server,
...), which `make serve` does not paper over by training.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NO_CHAMPION = 3


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import load_config, resolve_tracking_uri

    config = load_config(os.environ.get("BUYER_INTENT_CONFIG") or None)
    uri = resolve_tracking_uri(config)
    name, alias = config.mlflow.registered_model, config.mlflow.alias
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        print(f"no MLflow store at {uri}: no {name}@{alias} to serve", file=sys.stderr)
        return NO_CHAMPION
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow.MlflowClient(tracking_uri=uri).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            print(f"no {name}@{alias} in {uri}: {exc.message}", file=sys.stderr)
            return NO_CHAMPION
        print(f"cannot read the model registry at {uri}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{name}@{alias} is version {version.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
