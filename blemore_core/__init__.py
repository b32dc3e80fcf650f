"""blemore_core: the BlEmoRe research library (data, metrics, models, losses, fold trainer).

Plain PyTorch: importing it never imports ray, optuna, mlflow or the ``search`` package.
"""

__version__ = "0.1.0"
