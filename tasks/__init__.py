"""Prefect tasks: thin wrappers over ``deid_core`` that add retries and nothing else."""
