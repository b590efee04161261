"""The package version: the one source (`setup.py` reads this file)."""

__version__ = "0.2.0"
