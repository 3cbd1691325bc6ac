"""mtadcs: a reproducible pipeline for MTaDCS (ECCV 2024), learning with noisy labels."""

__version__ = "0.1.0"
