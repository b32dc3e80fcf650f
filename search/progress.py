"""What a search prints while it runs (README "The main job"): in a terminal, Tune's trial table redrawn in place;
otherwise (a log file, CI, ``ray job submit``) one line per trial event and the table once at the end.

Ray Tune's ``CLIReporter`` prints a fresh copy of its table every ``max_report_frequency`` seconds: in a log file a
search of a few minutes leaves dozens of copies. :class:`LiveTable` keeps Tune's table (its columns and rows) and
only changes where it goes; :class:`TrialEvents` is a Tune callback writing one line when a trial starts, reports
its last epoch, ends or fails.
"""

from __future__ import annotations

import sys
from typing import Any

from ray.tune import Callback, CLIReporter


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default ``sys.stdout``) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LiveTable(CLIReporter):
    """Tune's progress table, redrawn in place in a terminal (the previous copy is erased with ANSI cursor moves);
    when output is not a terminal only the final table is printed (the trial events are :class:`TrialEvents`).

    Args:
        terminal: override :func:`is_terminal` (tests); the other arguments are ``CLIReporter``'s.
    """

    def __init__(self, *args: Any, terminal: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._terminal = is_terminal() if terminal is None else terminal
        self._drawn = 0

    def should_report(self, trials: list, done: bool = False) -> bool:
        """Terminal: every ``max_report_frequency`` seconds and at the end; otherwise at the end only."""
        return super().should_report(trials, done) if self._terminal else done

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        """Print the table; in a terminal first erase the previous copy (``ESC[nF ESC[J``)."""
        text = self._progress_str(trials, done, *sys_info)
        if self._terminal and self._drawn:
            sys.stdout.write(f"\x1b[{self._drawn}F\x1b[J")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self._drawn = text.count("\n") + 1


class TrialEvents(Callback):
    """One line per trial event, for output that is not a terminal: started (with its searched values), ended
    (completed or stopped, with its epoch and objective), failed.

    Args:
        metric: the objective shown (the space's first metric).
        searched: the searched parameter keys shown when a trial starts.
    """

    def __init__(self, metric: str, searched: list[str]) -> None:
        self.metric, self.searched = metric, list(searched)
        self._last: dict[str, dict] = {}

    def _say(self, trial: Any, text: str) -> None:
        print(f"trial {trial.trial_id}: {text}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:  # noqa: D102
        values = ", ".join(f"{k}={trial.config[k]}" for k in self.searched if k in trial.config)
        self._say(trial, f"started ({values})" if values else "started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:  # noqa: D102
        self._last[trial.trial_id] = result

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:  # noqa: D102
        last = self._last.pop(trial.trial_id, {})
        how = "completed" if last.get("final") else "stopped early"
        value = last.get(self.metric)
        shown = f", {self.metric} {value:.4f}" if isinstance(value, (int, float)) else ""
        self._say(trial, f"{how} at epoch {last.get('epoch', '?')}{shown}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:  # noqa: D102
        self._last.pop(trial.trial_id, None)
        self._say(trial, "failed (see its error in MLflow and the log)")
