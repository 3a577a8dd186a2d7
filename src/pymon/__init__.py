"""pymon: a health-monitor daemon for LVS directors, successor of mon."""

__version__ = "0.1.0"
