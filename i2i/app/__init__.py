"""The application layer: the ``i2i`` command line, the daily run, the demo and the sample datasets.

Nothing below this layer imports it.
"""
