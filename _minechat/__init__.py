"""The minechat clients' machinery: private, for read_client.py and send_client.py only."""

# The one place the version is written: pyproject.toml and both clients' --version read it.
__version__ = "0.1.0"
