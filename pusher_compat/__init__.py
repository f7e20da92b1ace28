"""pusher-compat: a self-hosted server for the Pusher Channels protocol v7."""

__version__ = "0.1.0"
