"""Errors the CLI reports as one line (no traceback): bad input, bad config, missing models."""

from __future__ import annotations


class XmetaError(Exception):
    """Base class for errors caused by user input or environment, not by bugs."""


class InputError(XmetaError, ValueError):
    """A user file, column, row or value that cannot be used; the message names where."""


class ModelUnavailableError(XmetaError):
    """A model that can be found neither in the cache, nor on the hub, nor in a PyPI package."""
