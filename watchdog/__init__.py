"""watchdog: watches live ElevenLabs Conversational AI conversations and alerts Slack.

The import name is `watchdog`; the distribution is `convai-watchdog` (a popular
filesystem-events package also imports as `watchdog`, so install this tool in its own
environment: `uv tool install`, pipx or a venv).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
