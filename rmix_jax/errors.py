"""The project's user-facing error type (a leaf module: it imports nothing of the project)."""


class ConfigError(ValueError):
    """A bad configuration value or input; the message is one line naming the key and the fix."""
