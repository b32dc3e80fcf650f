"""search: the distributed layer of blemore (Ray Tune + Optuna search, Ray Train fold jobs, MLflow records, CLI).

Imports run one way: ``blemore_core`` <- ``search`` <- ``cluster`` scripts.
"""
