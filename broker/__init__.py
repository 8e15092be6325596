"""broker: an aggregating event-batch webhook broker."""

__version__ = "0.1.0"
