"""The version of hvd_hier: read by hvd_hier/__init__.py and by setup.py."""

__version__ = "0.1.0"
