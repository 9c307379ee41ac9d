"""MLflow "models from code" entry point: the registered model is this file plus the bundle artifact.

MLflow loads it by running this file, so no pickled Python object is ever stored in or loaded from
the registry; the bundle itself is verified (SHA-256, allowed skops types) when loaded.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class BuyerIntentModel(PythonModel):
    def load_context(self, context):
        from pipeline.bundle import load_bundle
        from pipeline.inference import Predictor

        # models logged before the seal was recorded here have no model_config: their bundle is still checked
        # against its own manifest
        seal = (context.model_config or {}).get("bundle_seal")
        self.predictor = Predictor(load_bundle(context.artifacts["bundle"], seal))

    # pd.DataFrame: a type hint MLflow accepts without inferring a schema from it (the logged signature is
    # the contract); without any hint MLflow warns on every log and load.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else model_input
        return self.predictor.predict([str(t) for t in texts])


mlflow.models.set_model(BuyerIntentModel())
