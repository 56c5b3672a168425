"""MLflow: the run of each training (`runs`) and the model registry (`registry`: what the `pull` and
`predict` commands of resnet_repro.cli call). `pyfunc_model` is the file MLflow runs to load a
registered model; `serving` is what it (and `predict`) take and answer: raw images in, class
probabilities and names out. `server` starts a local `mlflow server` for as long as its caller needs it."""
