"""Connecting to a node with nats-py through a creds file or creds text, and telling refusals apart.

    >>> nc = await connect("nats://127.0.0.1:4222", creds_path)
    >>> reason = await refused("nats://127.0.0.1:4222", creds_text=bad_creds)   # None when it connected
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import nats
from nats.aio.client import Client, RawCredentials

__all__ = ["connect", "refused"]


async def connect(url: str, creds_path: Optional[Path] = None, *, creds_text: Optional[str] = None,
                  errors: Optional[list] = None, name: str = "dchat-ops", **kw) -> Client:
    """Connect with a creds file (re-read at each reconnect) or creds text; errors are appended to ``errors``."""

    async def on_error(e):
        if errors is not None:
            errors.append(str(e))

    creds = RawCredentials(creds_text) if creds_text is not None else str(creds_path)
    kw.setdefault("connect_timeout", 2)
    return await nats.connect(url, user_credentials=creds, error_cb=on_error, name=name, **kw)


async def refused(url: str, creds_path: Optional[Path] = None, *, creds_text: Optional[str] = None,
                  timeout: float = 3.0) -> Optional[str]:
    """Try to connect once; the server's reason (lower case) when refused, None when it connected."""
    errors: list[str] = []
    try:
        nc = await asyncio.wait_for(
            connect(url, creds_path, creds_text=creds_text, errors=errors, allow_reconnect=False,
                    max_reconnect_attempts=0),
            timeout,
        )
    except Exception as exc:  # nats-py raises several types for an auth refusal
        return (" ".join(errors) or str(exc) or type(exc).__name__).lower()
    try:
        await nc.flush(timeout=1)
    except Exception as exc:
        return (" ".join(errors) or str(exc)).lower()
    finally:
        await nc.close()
    return None
