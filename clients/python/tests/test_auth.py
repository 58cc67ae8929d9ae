"""Tokens: a server with an HS256 secret lets in a client whose token it signed, refreshes it
in-band, and refuses forged, expired and missing tokens with UNAUTHENTICATED."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

import feedgate
from feedgate import ErrorCode

from conftest import next_event, start_server, stop_server

SECRET = "python-client-test-secret-32-bytes!!"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, *, expires_in: int = 600, secret: str = SECRET) -> str:
    """An HS256 JWT, made with the standard library."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + expires_in, "roles": ["user"]}
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.fixture
def keyed_server(database_url):
    server = start_server(database_url, "--hs256-secret", SECRET, anonymous=False)
    yield server
    stop_server(server)


async def test_a_signed_token_lets_the_client_in_and_can_be_refreshed(keyed_server):
    async with feedgate.connect(keyed_server.url, token=token("ada")) as client:
        assert client.welcome.authenticated.user == "ada"
        assert list(client.welcome.authenticated.roles) == ["user"]
        subscription = await client.subscribe_topic("t")
        await client.publish("t", b"hi")
        event = await next_event(subscription)
        while event.WhichOneof("body") != "message":  # Ready first
            event = await next_event(subscription)
        assert event.message.payload == b"hi"
        refreshed = await client.authenticate(token("ada", expires_in=1200))
        assert refreshed.user == "ada"
        assert refreshed.expires_at_micros > client.welcome.authenticated.expires_at_micros
        with pytest.raises(feedgate.FeedgateError) as caught:
            await client.authenticate(token("eve"))
        assert caught.value.code == ErrorCode.UNAUTHENTICATED
        assert await client.ping() > 0


@pytest.mark.parametrize(
    "bad, says",
    [
        (token("ada", secret="another-secret-of-thirty-two-bytes!!"), "invalid signature"),
        (token("ada", expires_in=-60), "expired"),
        ("", "authenticate first"),
    ],
)
async def test_bad_or_missing_tokens_are_refused(keyed_server, bad, says):
    with pytest.raises(feedgate.FeedgateError) as caught:
        async with feedgate.connect(keyed_server.url, token=bad) as client:
            await client.subscribe_topic("t")
    assert caught.value.code == ErrorCode.UNAUTHENTICATED
    assert says in caught.value.message
