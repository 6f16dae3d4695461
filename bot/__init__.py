"""evalbot: CI/CD discipline for prompts, model configs and eval datasets."""

__version__ = "0.1.0"
