"""MLflow: the run of each training (`runs`), the model registry (`registry`), and the `pull` and
`predict` commands (`cli`). `pyfunc_model` is the file MLflow runs to load a registered model; `serving`
is what it (and `predict`) take and answer: raw images in, class probabilities and names out."""
