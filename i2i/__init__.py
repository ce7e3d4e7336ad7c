"""The i2i-recall system's own package: the foundation (`core`), the application layer (`app`) and the test harness (`testing`)."""

__version__ = "0.1.0"
