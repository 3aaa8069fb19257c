"""The baseline: a naive poller with no durable state, no audit log, no retries, no pacing.

It polls the workspace and every agent in `AGENT_IDS` each `POLL_INTERVAL` seconds with
a sync `httpx.Client` in a loop (at most `CONCURRENCY` requests at once, from a thread
pool), compares each count with `ABOVE`, and posts to Slack when a series crosses it.
Run with `python -m benchmarks.naive_poller` and the environment ELEVENLABS_BASE_URL,
ELEVENLABS_API_KEY, SLACK_API_URL, SLACK_BOT_TOKEN, SLACK_CHANNEL, POLL_INTERVAL, ABOVE,
AGENT_IDS (comma-separated), CONCURRENCY.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from slack_sdk import WebClient


def main() -> None:
    env = os.environ
    url = env["ELEVENLABS_BASE_URL"].rstrip("/") + "/v1/convai/analytics/live-count"
    headers = {"xi-api-key": env["ELEVENLABS_API_KEY"]}
    slack = WebClient(env["SLACK_BOT_TOKEN"], base_url=env.get("SLACK_API_URL", WebClient.BASE_URL))
    channel, above = env.get("SLACK_CHANNEL", "#oncall"), int(env.get("ABOVE", "25"))
    interval, slots = float(env.get("POLL_INTERVAL", "15")), int(env.get("CONCURRENCY", "8"))
    series = [None, *filter(None, env.get("AGENT_IDS", "").split(","))]
    firing: set[str | None] = set()
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    with httpx.Client(timeout=10, limits=limits) as client, ThreadPoolExecutor(slots) as pool:

        def poll(agent_id: str | None) -> tuple[str | None, int | None]:
            params = {"agent_id": agent_id} if agent_id else None
            try:
                return agent_id, int(
                    client.get(url, headers=headers, params=params).json()["count"]
                )
            except Exception:
                return agent_id, None

        print('{"event": "naive.started"}', flush=True)
        while True:
            started = time.monotonic()
            for agent_id, count in pool.map(poll, series):
                if count is not None and (count > above) != (agent_id in firing):
                    firing ^= {agent_id}
                    state = "FIRING" if agent_id in firing else "resolved"
                    text = f"{state}: {agent_id or 'workspace'} has {count} live (limit {above})"
                    slack.chat_postMessage(channel=channel, text=text)
            time.sleep(max(0.0, started + interval - time.monotonic()))


if __name__ == "__main__":
    main()
