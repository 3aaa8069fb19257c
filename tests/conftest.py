"""Fixtures shared across the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs


@pytest.fixture
def fake_elevenlabs() -> Iterator[FakeElevenLabs]:
    """A started loopback ElevenLabs fake (key "test-key", workspace count 0), stopped after."""
    with FakeElevenLabs() as fake:
        yield fake
