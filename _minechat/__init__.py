"""The minechat clients' machinery: private, for read_client.py and send_client.py only."""

# The package's one version: pyproject.toml reads it from here, and both clients' --version print it.
__version__ = "0.1.0"
