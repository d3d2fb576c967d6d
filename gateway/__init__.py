"""async-gateway: a reverse proxy that answers 202 for slow backends and replays their answers."""

__version__ = "0.1.0"
