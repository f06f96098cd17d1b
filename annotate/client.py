"""Talking to the review server: readiness, a connected SDK client, and one error for "it is down"."""

from __future__ import annotations

import time
from typing import Callable

import httpx

from coa.errors import BadInput


class ServerDown(RuntimeError):
    """The Argilla server did not answer; the message names the URL and what to do."""


def server_up(api_url: str, timeout: float = 3.0) -> bool:
    try:
        httpx.get(f"{api_url}/api/v1/me", timeout=timeout)
        return True
    except httpx.TransportError:
        return False


def wait_ready(api_url: str, api_key: str, timeout_s: float, check: Callable[[], None] = lambda: None) -> None:
    """Until ``GET /api/v1/me`` answers 200 with the owner's key (``/api/v1/status`` gives 422 in this setup)."""
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        try:
            r = httpx.get(f"{api_url}/api/v1/me", headers={"X-Argilla-Api-Key": api_key}, timeout=5)
            if r.status_code == 200:
                return
            if r.status_code == 401:
                raise BadInput(
                    f"{api_url} rejects the owner's API key: its database was created with another "
                    "key (ARGILLA_OWNER_API_KEY changed?); use that key or a fresh data_dir"
                )
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{api_url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.25)


def down_message(api_url: str, what: str) -> str:
    return (
        f"Argilla server at {api_url} is not reachable ({what}); nothing was lost: start it "
        f"(python -m annotate.serve) and run the same command again, it resumes"
    )


def connect(api_url: str, api_key: str, timeout: int = 120):
    """An ``argilla.Argilla`` client, or ``ServerDown`` naming the URL."""
    import argilla as rg

    try:
        return rg.Argilla(api_url=api_url, api_key=api_key, timeout=timeout)
    except httpx.TransportError as e:
        raise ServerDown(down_message(api_url, type(e).__name__)) from None
