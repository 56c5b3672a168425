"""The MLflow pyfunc form of a registered net, logged as "models from code": MLflow runs this file to load
the model, so nothing pickled is stored and loading runs no code from the artifact store.

Input: raw images, as pixel arrays or encoded PNG/JPEG files; output: one row per image with the most
likely class (index, name, probability) and the probability of every class by name. The forms are
listed in `resnet_repro.tracking.serving`. Input it cannot use is refused with an MlflowException
whose message says why, which `mlflow models serve` answers with HTTP 400.
"""

from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from resnet_repro.artifacts import WEIGHTS, load_trained
from resnet_repro.tracking.serving import classify, image_batch


class ResNetClassifier(PythonModel):
    # predict's model_input has no type hint: MLflow would make a signature of it and refuse the other
    # forms. This tells MLflow not to look for one (and not to warn that there is none).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        # MLflow puts every logged artifact file side by side: that is a trained-model directory, whose
        # tensor files load_trained checks against the sha256 in its model.json.
        self.trained = load_trained(Path(context.artifacts[WEIGHTS]).parent)

    def predict(self, context, model_input, params=None):
        try:
            images = image_batch(model_input, self.trained.description["input_size"])
        except ValueError as error:
            raise MlflowException.invalid_parameter_value(f"resnet-repro: {error}") from None
        return classify(self.trained.module, self.trained.mean_image, self.trained.class_names, images)


mlflow.models.set_model(ResNetClassifier())
