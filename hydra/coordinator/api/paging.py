"""Page sizes and opaque page tokens of the List calls."""

from __future__ import annotations

import base64
import binascii

from hydra.errors import InvalidArgument

#: Largest page any List call returns.
MAX_PAGE = 1000


def page_size(requested: int, default: int) -> int:
    """A page size within bounds; 0 means the default."""
    if requested > MAX_PAGE:
        raise InvalidArgument(f"at most {MAX_PAGE}", path="page_size")
    return requested or default


def encode_token(value: str) -> str:
    """An opaque page token."""
    return base64.urlsafe_b64encode(value.encode()).decode()


def decode_token(token: str) -> str:
    """The value behind a page token; a malformed one is INVALID_ARGUMENT."""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode() if token else ""
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("malformed page token", path="page_token") from None
