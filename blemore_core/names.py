"""Names and defaults stated once: metric names, threshold protocols, the headline default and the cache root.

Every module that spells one of these facts imports it from here (the library and :mod:`search` alike; this
module imports nothing of the project, so anything may import it). Search-side defaults (tracking URI, Tune
storage) are in :mod:`search.defaults`, since the library knows nothing of MLflow or Ray.

* Metrics (docs/ARCHITECTURE.md section 3): ``acc_presence``, ``acc_salience`` and ``score`` (their mean, the challenge's
  Score) are the *objectives* a search may maximise; a fold's record adds the thresholds ``alpha`` (presence)
  and ``beta`` (salience) it was decoded with.
* Protocols (docs/ARCHITECTURE.md section 4): how the thresholds (and the epoch) of a fold are chosen: ``val``, ``train``,
  ``crossfit``; the *headline* protocol (the one behind ``score`` and the stop) is ``val`` or ``crossfit``,
  ``crossfit`` by default (leak-free).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the challenge's numbers, in its order (tables): ACC_presence, ACC_salience and Score, their mean
METRICS: tuple[str, ...] = ("acc_presence", "acc_salience", "score")
#: the default objective of a search (one of :data:`METRICS`)
DEFAULT_OBJECTIVE: str = "score"
#: the numbers a search may maximise (fold means of the headline protocol), the default objective first
OBJECTIVES: tuple[str, ...] = (DEFAULT_OBJECTIVE, *(m for m in METRICS if m != DEFAULT_OBJECTIVE))
#: the numbers recorded per fold and protocol: the challenge's numbers and the thresholds alpha, beta
FOLD_METRICS: tuple[str, ...] = (*METRICS, "alpha", "beta")
#: the threshold protocols, all recorded for every fold
PROTOCOLS: tuple[str, ...] = ("val", "train", "crossfit")
#: the protocols that may be the headline (``train`` reuses another protocol's epoch, so it cannot lead)
HEADLINE_PROTOCOLS: tuple[str, ...] = ("val", "crossfit")
#: the headline protocol when a config or a result does not name one
DEFAULT_HEADLINE: str = "crossfit"
#: environment variable overriding :func:`cache_root`
CACHE_ENV: str = "BLEMORE_CACHE"


def cache_root() -> Path:
    """The root of blemore's caches: ``$BLEMORE_CACHE`` (``~`` expanded) if set, else ``~/.cache/blemore``.

    Holds generated releases (``synthetic/``) and, when a release folder is not writable, feature caches
    (``features/``). Nothing is created here."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blemore"


__all__ = ["METRICS", "OBJECTIVES", "DEFAULT_OBJECTIVE", "FOLD_METRICS", "PROTOCOLS", "HEADLINE_PROTOCOLS", "DEFAULT_HEADLINE",
           "CACHE_ENV", "cache_root"]
