"""Search-side defaults stated once: where a search keeps its Tune state and its MLflow records, and where the
MLflow UI listens (library-side names and defaults are in :mod:`blemore_core.names`)."""

from __future__ import annotations

from pathlib import Path

#: Tune storage of a search when ``--storage`` is not given (relative to the working directory)
DEFAULT_STORAGE: str = "ray_results"
#: file name of the local SQLite tracking store when ``--tracking-uri`` is not given
DEFAULT_STORE_FILE: str = "mlflow.db"
#: address ``mlflow ui`` serves on (loopback only) and the printed links point to for a local store
UI_HOST, UI_PORT = "127.0.0.1", 5000


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<workdir>/mlflow.db`` (absolute; artifacts in ``<workdir>/mlruns``), which ``mlflow ui`` opens
    with ``--backend-store-uri`` set to the same URI."""
    return f"sqlite:///{Path(workdir).resolve() / DEFAULT_STORE_FILE}"


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store (loopback only)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT}"


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI address of a store: the server itself for an http(s) URI, else the address of
    :func:`ui_command` (``http://127.0.0.1:5000``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{UI_HOST}:{UI_PORT}"


__all__ = ["DEFAULT_STORAGE", "DEFAULT_STORE_FILE", "UI_HOST", "UI_PORT", "default_tracking_uri", "ui_command",
           "ui_base"]
