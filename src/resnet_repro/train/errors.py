"""How a training ends other than by reaching its last iteration. The stage scripts report each in one
line; the tracking run maps them to its own statuses (tracking.runs.TrainingRun)."""

import signal


class TrainingDiverged(RuntimeError):
    """The loss, or the weights, became NaN or infinite; the message names the iteration and the loss.
    The last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM (a cluster's notice before a kill) or Ctrl-C stopped the training at a step boundary,
    after a checkpoint was saved; running the stage again resumes it."""

    def __init__(self, stopped_by: signal.Signals, iteration: int, iterations: int):
        super().__init__(f"stopped by {stopped_by.name} at iteration {iteration} of {iterations}; "
                         f"checkpoint saved, run again to resume")
        self.signal = stopped_by


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or that is not a training checkpoint; the message names it."""
