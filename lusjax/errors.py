"""The one exception type for bad user input, and the one for a preempted run.

Raise `UserError("one clear sentence")` for anything a user can fix (missing
file, bad config key, unknown method, empty dataset). The CLI prints it as a
single line and exits with status 2; it never shows a traceback for it.

`Preempted` ends a training run stopped by SIGTERM or SIGINT once its state is
committed on disk; the CLI prints its message and exits with `PREEMPTED_EXIT`.
"""

PREEMPTED_EXIT = 3  # "preempted, checkpoint saved, rerun the same command to resume"


class UserError(Exception):
    """Bad input that the user can fix; the message is shown as one line."""


class Preempted(Exception):
    """Training stopped on a signal. `step`: the step committed in `directory` that a rerun
    resumes from (None: no step was ever done, nothing is saved)."""

    def __init__(self, signal_name: str, step: int | None, directory: str):
        self.signal_name, self.step, self.directory = signal_name, step, directory
        if step is None:
            what = "no step done; nothing saved; rerun the same command to start"
        else:
            what = f"saved step {step} in {directory}; rerun the same command to resume"
        super().__init__(f"preempted ({signal_name}): {what}")
