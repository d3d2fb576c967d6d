"""The package's few exceptions; each boundary translates them with `raise ... from e`."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration file is unusable; `messages` are `FILE:LINE: key.path: message`."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class StorageError(GatewayError):
    """Storage could not do what was asked (locked past a bound, disk full, unwritable)."""


class IdempotencyConflict(GatewayError):
    """An Idempotency-Key was used again for a different method, path or body."""


class BodyTooLarge(GatewayError):
    """A request body went past `server.max_body`."""
