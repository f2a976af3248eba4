"""OpsConductor Execution: run infrastructure operations plans safely."""

__version__ = "0.1.0"
