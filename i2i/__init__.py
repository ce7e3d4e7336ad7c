"""Core of the i2i-recall system: the command line, the table contracts and the sample datasets."""

__version__ = "0.1.0"
