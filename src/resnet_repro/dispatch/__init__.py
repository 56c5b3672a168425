"""`resnet-repro study run`: a study's out-of-date nets trained at once on Ray, one task per net, with
DVC still the source of truth (its lock file, cache and remote) and MLflow as for `dvc repro`.

`preflight` checks what must hold before anything runs; `driver` (`run_study`) runs in the user's
workspace: the tracking server, the tasks, and the final `dvc repro` that brings their results back
through DVC's run-cache; `task` (`train_net`) trains one net in a clean clone on any node and returns
what it did. `common` holds what they share.
"""
