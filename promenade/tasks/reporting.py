"""Turn user mistakes raised inside task actions into clean doit failures (no traceback)."""

from __future__ import annotations

import functools
import sys

from doit.exceptions import TaskFailed

from ..errors import PromenadeError


def user_errors(action):
    """Decorate a python-action: a :class:`PromenadeError` prints its report and fails the task."""

    @functools.wraps(action)
    def wrapper(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except PromenadeError as exc:
            print(exc.report(), file=sys.stderr)
            return TaskFailed("stopped: the problems above must be fixed first", report=False)

    return wrapper
