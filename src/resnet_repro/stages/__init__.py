"""The pipeline's stages, one module each, as dvc.yaml runs them through pipeline/<stage>.py.

The top of the package but for cli.py: a stage reads params.yaml, calls the libraries below it
(data, train, evaluate, tracking, report) and writes the outputs that dvc.yaml declares.
"""
