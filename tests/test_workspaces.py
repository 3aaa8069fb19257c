"""Several workspaces: `[[workspaces]]` in the rules file, their series and scopes, no-data
and inhibition per workspace, one client per workspace, and what `check`, `status` and
`replay` say about them."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.harness import ROOT, base_env
from watchdog.clock import SystemClock
from watchdog.daemon import Daemon, Reloaded
from watchdog.engine import Engine
from watchdog.errors import ConfigError, PollFailure, SourceError
from watchdog.inhibition import inhibitions
from watchdog.model import (
    NO_DATA_RULE,
    AlertRecord,
    AlertState,
    Sample,
    Transition,
    TransitionKind,
)
from watchdog.notify import ConsoleNotifier
from watchdog.rules import Config, ThresholdRule, parse_config
from watchdog.silences import Silence, cover
from watchdog.source import Endpoint, WorkspaceSources
from watchdog.store import Store

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

ACME_KEY = "sk_acme_1111222233334444555566667777aaaa"
BETA_KEY = "sk_beta_8888999900001111222233334444bbbb"

WORKSPACES = """\
[watchdog]
stale_after = "1m"
repeat = "0s"
poll_interval = "15s"

[slack]
channel = "#oncall"

[[workspaces]]
name = "acme"
api_key_env = "ACME_ELEVENLABS_API_KEY"
channel = "#acme"
[[workspaces.agents]]
name = "support"
id = "agent_acme_support"
[[workspaces.agents]]
name = "sales"
id = "agent_acme_sales"

[[workspaces]]
name = "beta"
base_url = "https://api.eu.residency.elevenlabs.io/"
[[workspaces.agents]]
name = "support"
id = "agent_beta_support"
"""


def workspaces(rules: str = "", head: str = WORKSPACES) -> Config:
    return parse_config(head + rules, source="test.toml")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fired(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.rule, t.series) for t in transitions if t.kind is TransitionKind.FIRING]


# -- the rules file -----------------------------------------------------------------


def test_series_are_named_workspace_slash_series() -> None:
    """Each workspace's own series first, then its agents, workspace by workspace; its
    host (without a trailing slash) and channel are kept."""
    config = workspaces()
    assert config.series == (
        ("acme/workspace", None),
        ("acme/support", "agent_acme_support"),
        ("acme/sales", "agent_acme_sales"),
        ("beta/workspace", None),
        ("beta/support", "agent_beta_support"),
    )
    beta = config.workspace("beta/support")
    assert beta is not None
    assert beta.base_url == "https://api.eu.residency.elevenlabs.io"
    assert beta.credential == "elevenlabs_api_key_beta"


@pytest.mark.parametrize(
    ("scope", "limit", "series"),
    [
        ("workspace", None, ("acme/workspace", "beta/workspace")),
        ("*", None, ("acme/support", "acme/sales", "beta/support")),
        ("acme/*", None, ("acme/support", "acme/sales")),
        ("beta/workspace", None, ("beta/workspace",)),
        (["acme/sales", "beta/*", "acme/sales"], None, ("acme/sales", "beta/support")),
        ("workspace", ["beta"], ("beta/workspace",)),
        ("*", ["acme"], ("acme/support", "acme/sales")),
    ],
)
def test_scope_words_expand_per_workspace(
    scope: str | list[str], limit: list[str] | None, series: tuple[str, ...]
) -> None:
    """`workspace` is each workspace's own series, `*` every agent of every workspace,
    `<ws>/*` every agent of one; `workspaces = [...]` limits the first two."""
    limited = f"workspaces = {json.dumps(limit)}\n" if limit is not None else ""
    config = workspaces(
        f'[[rules]]\nname = "r"\nkind = "threshold"\nabove = 3\n'
        f"scope = {json.dumps(scope)}\n{limited}"
    )
    assert config.scopes["r"] == series


def test_a_rule_goes_to_its_workspace_channel_unless_it_routes_elsewhere() -> None:
    """A workspace's `channel` is the default of its alerts (no-data too); a rule's own
    channel wins; a workspace without one falls back to `[slack] channel`."""
    config = workspaces(
        '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 3\n\n'
        '[[rules]]\nname = "own"\nkind = "threshold"\nabove = 3\nchannel = "#own"\n'
    )
    assert config.channel_for("r", "acme/support") == "#acme"
    assert config.channel_for(NO_DATA_RULE, "acme/workspace") == "#acme"
    assert config.channel_for("own", "acme/workspace") == "#own"
    assert config.channel_for("r", "beta/workspace") == "#oncall"


PLANS = WORKSPACES.replace(
    'channel = "#acme"\n', 'channel = "#acme"\n[workspaces.plan]\nconcurrency_limit = 10\n'
) + ("\n[plan]\nconcurrency_limit = 50\n")


def test_a_percentage_means_a_share_of_each_workspace_s_own_plan() -> None:
    """`above = "80%"` is 8 of acme's own limit of 10 and 40 of the top-level [plan]'s 50
    that beta falls back to; the built-in at-capacity rule is per workspace the same way."""
    config = workspaces('[[rules]]\nname = "r"\nkind = "threshold"\nabove = "80%"\n', PLANS)
    acme, beta = config.rule_on("r", "acme/workspace"), config.rule_on("r", "beta/workspace")
    assert isinstance(acme, ThresholdRule)
    assert isinstance(beta, ThresholdRule)
    assert (acme.above, beta.above) == (8, 40)
    cap_acme = config.rule_on("at-capacity", "acme/workspace")
    cap_beta = config.rule_on("at-capacity", "beta/workspace")
    assert isinstance(cap_acme, ThresholdRule)
    assert isinstance(cap_beta, ThresholdRule)
    assert (cap_acme.above, cap_beta.above) == (9, 49)
    engine = Engine(config, started_at=T0)
    out = engine.observe(Sample("acme/workspace", at(1), 10))
    out += engine.observe(Sample("beta/workspace", at(1), 10))
    assert sorted(fired(out)) == [("at-capacity", "acme/workspace"), ("r", "acme/workspace")]


BAD = [
    (
        "workspace-name-with-slash",
        '[[workspaces]]\nname = "ac/me"\n',
        "workspaces[0] (ac/me).name: must be 1-40 of a-z, 0-9, _ and -, starting with a"
        " letter or digit (it names series and a credential file)",
    ),
    (
        "workspace-name-upper-case",
        '[[workspaces]]\nname = "Acme"\n',
        "workspaces[0] (Acme).name: must be 1-40 of a-z, 0-9, _ and -",
    ),
    (
        "workspace-name-empty",
        '[[workspaces]]\nname = ""\n',
        "workspaces[0] ().name: must be 1-40 of a-z, 0-9, _ and -",
    ),
    (
        "workspace-name-missing",
        "[[workspaces]]\n",
        "workspaces[0].name: required key is missing",
    ),
    (
        "duplicate-workspace",
        '[[workspaces]]\nname = "acme"\n[[workspaces]]\nname = "acme"\n',
        "workspaces[1] (acme).name: duplicate workspace name",
    ),
    (
        "bad-base-url",
        '[[workspaces]]\nname = "acme"\nbase_url = "ftp://x"\n',
        "workspaces[0] (acme).base_url: must start with https://",
    ),
    (
        "bad-variable-name",
        '[[workspaces]]\nname = "acme"\napi_key_env = "ACME KEY"\n',
        "workspaces[0] (acme).api_key_env: 'ACME KEY' is not an environment variable name",
    ),
    (
        "misspelt-key",
        '[[workspaces]]\nname = "acme"\napi_key_var = "X"\n',
        "workspaces[0] (acme).api_key_var: unknown key: did you mean 'api_key_env'?",
    ),
    (
        "the-key-itself",
        '[[workspaces]]\nname = "acme"\napi_key = "sk_secret"\n',
        "workspaces[0] (acme).api_key: unknown key",
    ),
    (
        "bad-plan",
        '[[workspaces]]\nname = "acme"\n[workspaces.plan]\nconcurrency_limit = 0\n',
        "workspaces[0] (acme).plan.concurrency_limit: Input should be greater than or equal to 1",
    ),
    (
        "duplicate-agent-in-a-workspace",
        '[[workspaces]]\nname = "acme"\n[[workspaces.agents]]\nname = "a"\nid = "x"\n'
        '[[workspaces.agents]]\nname = "a"\nid = "y"\n',
        "workspaces[0] (acme).agents[1] (a).name: duplicate agent name",
    ),
    (
        "agent-named-workspace",
        '[[workspaces]]\nname = "acme"\n[[workspaces.agents]]\nname = "workspace"\nid = "x"\n',
        "workspaces[0] (acme).agents[0] (workspace).name: 'workspace' is reserved",
    ),
    (
        "agent-name-with-slash",
        '[[workspaces]]\nname = "acme"\n[[workspaces.agents]]\nname = "a/b"\nid = "x"\n',
        "workspaces[0] (acme).agents[0] (a/b).name: '/' is not allowed",
    ),
    (
        "mixed-with-top-level-agents",
        '[[agents]]\nname = "a"\nid = "x"\n[[workspaces]]\nname = "acme"\n',
        "agents: top-level [[agents]] and [[workspaces]] cannot be mixed: move each agent"
        " into its workspace's [[workspaces.agents]]",
    ),
    (
        "workspaces-key-without-workspaces",
        '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\nworkspaces = ["acme"]\n',
        "rules[0] (r).workspaces: this file has no [[workspaces]]",
    ),
    (
        "unknown-workspace-in-rule",
        WORKSPACES
        + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\nworkspaces = ["acem"]\n',
        "rules[0] (r).workspaces: unknown workspace 'acem': did you mean 'acme'?",
    ),
    (
        "empty-workspaces-in-rule",
        WORKSPACES + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\nworkspaces = []\n',
        "rules[0] (r).workspaces: must name at least one workspace (leave it out for all)",
    ),
    (
        "bare-agent-name",
        WORKSPACES + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\nscope = "sales"\n',
        "rules[0] (r).scope: unknown series 'sales': did you mean",
    ),
    (
        "series-of-an-unknown-workspace",
        WORKSPACES + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\nscope = "gamma/*"\n',
        "rules[0] (r).scope: unknown series 'gamma/*'",
    ),
    (
        "series-outside-the-rule-s-workspaces",
        WORKSPACES + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\n'
        'scope = "beta/support"\nworkspaces = ["acme"]\n',
        "rules[0] (r).scope: 'beta/support' is not in the rule's workspaces: ('acme',)",
    ),
    (
        "percentage-without-any-plan-for-a-workspace",
        WORKSPACES.replace(
            'channel = "#acme"\n',
            'channel = "#acme"\n[workspaces.plan]\nconcurrency_limit = 10\n',
        )
        + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = "80%"\n',
        "rules[0] (r).scope: a percentage needs the plan of workspace 'beta': set [plan] or"
        " that workspace's [workspaces.plan]",
    ),
    (
        "mute-scope-unknown-series",
        WORKSPACES + '[[mute]]\nname = "m"\ndays = "mon"\nhours = "01:00-02:00"\ntz = "UTC"\n'
        'scope = "workspace"\n',
        "mute[0] (m).scope: unknown series 'workspace': did you mean",
    ),
]


@pytest.mark.parametrize(("body", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_workspaces_are_clear_problems(body: str, expected: str) -> None:
    """Every bad `[[workspaces]]` input is one problem line naming the workspace and key."""
    with pytest.raises(ConfigError) as caught:
        parse_config(body, source="test.toml")
    assert any(p.startswith(f"test.toml: {expected}") for p in caught.value.problems), (
        caught.value.problems
    )


def test_a_mute_may_cover_one_workspace() -> None:
    """A `[[mute]]` scope of `<ws>/*` covers every series of that workspace only."""
    config = workspaces(
        '[[mute]]\nname = "m"\ndays = "mon-sun"\nhours = "00:00-24:00"\ntz = "UTC"\n'
        'scope = "beta/*"\n'
    )
    mute = config.mutes[0]
    assert mute.covers("r", "beta/workspace", T0)
    assert mute.covers("r", "beta/support", T0)
    assert not mute.covers("r", "acme/workspace", T0)


SERIES = ("acme/workspace", "acme/support", "acme/sales", "beta/workspace", "beta/support")


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        ("*", SERIES),
        ("acme/*", ("acme/workspace", "acme/support", "acme/sales")),
        ("beta/*", ("beta/workspace", "beta/support")),
        ("acme/support", ("acme/support",)),
        ("beta/workspace", ("beta/workspace",)),
    ],
)
def test_a_silence_and_a_mute_with_one_scope_cover_the_same_series(
    scope: str, covered: tuple[str, ...]
) -> None:
    """In the suppression stage a silence's scope means what the same words in a
    `[[mute]]`'s scope mean: `*` every series, `<ws>/*` every series of that workspace, a
    series name that series."""
    config = workspaces(
        '[[mute]]\nname = "m"\ndays = "mon-sun"\nhours = "00:00-24:00"\ntz = "UTC"\n'
        f'scope = "{scope}"\n'
    )
    silence = Silence(1, "*", scope, T0, at(3600), "cli:alice", "client maintenance")
    mute = config.mutes[0]
    assert [s for s in SERIES if cover("r", s, at(1), [silence], [])] == list(covered)
    assert [s for s in SERIES if cover("r", s, at(1), [], [mute])] == list(covered)


# -- no-data and inhibition per workspace ----------------------------------------------


def test_a_rejected_key_pages_once_for_its_workspace_only() -> None:
    """Beta's key is rejected on every series: one no-data alert, on beta/workspace; its
    agent adds none; acme's agent that stops answering still pages on its own."""
    engine = Engine(workspaces(), started_at=T0)
    out: list[Transition] = []
    for series in ("acme/workspace", "acme/support", "acme/sales"):
        out += engine.observe(Sample(series, at(0), 3))
    out += engine.poll_failed("beta/support", at(1), "rejected", immediate=True, key_rejected=True)
    out += engine.poll_failed(
        "beta/workspace", at(1), "rejected", immediate=True, key_rejected=True
    )
    for second in (15, 30, 45, 60, 75):
        out += engine.observe(Sample("acme/workspace", at(second), 3))
        out += engine.poll_failed("acme/support", at(second), "HTTP 503", immediate=False)
        out += engine.poll_failed(
            "beta/support", at(second), "rejected", immediate=True, key_rejected=True
        )
        out += engine.tick(at(second))
    assert fired(out) == [(NO_DATA_RULE, "beta/workspace"), (NO_DATA_RULE, "acme/support")]


def test_an_agent_refused_before_its_workspace_answers_waits_for_the_workspace() -> None:
    """A key refused on an agent first and then on its workspace in the same cycle pages
    once, for the workspace (without [[workspaces]] too)."""
    config = parse_config(
        '[watchdog]\nstale_after = "1m"\n[[agents]]\nname = "support"\nid = "a"\n'
    )
    engine = Engine(config, started_at=T0)
    out = engine.poll_failed("support", at(1), "rejected", immediate=True, key_rejected=True)
    out += engine.tick(at(1))
    out += engine.poll_failed("workspace", at(1.1), "rejected", immediate=True, key_rejected=True)
    out += engine.tick(at(2))
    assert fired(out) == [(NO_DATA_RULE, "workspace")]


def test_an_agent_refused_while_its_workspace_answers_pages_after_the_workspace_s_poll() -> None:
    """The key is good for the workspace (it answers after the refusal): the refusal is
    the agent's own, and its no-data fires at the next tick."""
    engine = Engine(workspaces(), started_at=T0)
    out = engine.observe(Sample("acme/workspace", at(0), 3))
    out += engine.poll_failed("acme/support", at(1), "rejected", immediate=True, key_rejected=True)
    out += engine.tick(at(2))
    assert fired(out) == []
    out += engine.observe(Sample("acme/workspace", at(15), 3))
    out += engine.tick(at(15))
    assert fired(out) == [(NO_DATA_RULE, "acme/support")]


def test_a_workspace_s_outage_hides_only_its_own_agents() -> None:
    """While beta's workspace series fails, beta's agents raise no no-data of their own;
    acme's agent, failing at the same time, still does."""
    engine = Engine(workspaces(), started_at=T0)
    out: list[Transition] = []
    for second in range(0, 91, 15):
        out += engine.observe(Sample("acme/workspace", at(second), 3))
        for series in ("beta/workspace", "beta/support", "acme/support"):
            out += engine.poll_failed(series, at(second), "HTTP 503", immediate=False)
        out += engine.tick(at(second))
    assert sorted(fired(out)) == [
        (NO_DATA_RULE, "acme/support"),
        (NO_DATA_RULE, "beta/workspace"),
    ]


def test_a_rule_on_a_workspace_inhibits_only_that_workspace_s_agents() -> None:
    """`inhibited_by` looks at the same series and at its own workspace's series."""
    config = workspaces(
        '[[rules]]\nname = "collapsed"\nkind = "threshold"\nbelow = 1\n\n'
        '[[rules]]\nname = "idle"\nkind = "threshold"\nbelow = 1\nscope = "*"\n'
        'inhibited_by = ["collapsed"]\n'
    )
    firing = AlertRecord(
        "collapsed", "beta/workspace", "id1", AlertState.FIRING, T0, 0, T0, "count < 1"
    )
    found = inhibitions(config.inhibited_by, [firing])
    assert found.inhibitor("idle", "beta/support") == "collapsed"
    assert found.inhibitor("idle", "acme/support") is None


# -- polling --------------------------------------------------------------------------


def test_each_workspace_is_polled_at_its_own_host_with_its_own_key() -> None:
    """Two servers with different keys: each series goes to its workspace's server with
    that workspace's key; a series of no configured workspace is a SourceError."""
    with (
        FakeElevenLabs(api_key=ACME_KEY, count=4) as acme,
        FakeElevenLabs(api_key=BETA_KEY, count=7) as beta,
    ):
        beta.add_agent("agent_b", 2)
        endpoints = {
            "acme": Endpoint(SecretStr(ACME_KEY), acme.url),
            "beta": Endpoint(SecretStr(BETA_KEY), beta.url),
        }

        async def run() -> list[int | SourceError]:
            with WorkspaceSources(endpoints, now=lambda: T0, timeout=2.0) as source:
                out: list[int | SourceError] = []
                for series, agent in (
                    ("acme/workspace", None),
                    ("beta/workspace", None),
                    ("beta/support", "agent_b"),
                    ("gamma/workspace", None),
                ):
                    try:
                        out.append((await source.poll(series, agent)).count)
                    except SourceError as exc:
                        out.append(exc)
                return out

        *counts, unknown = asyncio.run(run())
        assert counts == [4, 7, 2]
        assert isinstance(unknown, SourceError)
        assert unknown.series == "gamma/workspace"
        assert {r.headers["xi-api-key"] for r in acme.requests} == {ACME_KEY}
        assert {r.headers["xi-api-key"] for r in beta.requests} == {BETA_KEY}


def test_a_workspace_with_the_wrong_key_fails_alone() -> None:
    """The server refuses one workspace's key: that workspace's poll is a rejected key,
    the other's is a good count."""
    with FakeElevenLabs(api_key=ACME_KEY, count=4) as server:
        endpoints = {
            "acme": Endpoint(SecretStr(ACME_KEY), server.url),
            "beta": Endpoint(SecretStr(BETA_KEY), server.url),
        }

        async def run() -> tuple[int, SourceError]:
            with WorkspaceSources(endpoints, now=lambda: T0, timeout=2.0) as source:
                good = (await source.poll("acme/workspace", None)).count
                with pytest.raises(SourceError) as caught:
                    await source.poll("beta/workspace", None)
                return good, caught.value

        good, refused = asyncio.run(run())
        assert good == 4
        assert refused.failure is PollFailure.REJECTED_KEY


def test_reconfigure_with_a_bad_host_changes_nothing() -> None:
    """A reload naming an unusable host raises ValueError and polls on as before."""
    with FakeElevenLabs(api_key=ACME_KEY, count=4) as server:
        endpoints = {"acme": Endpoint(SecretStr(ACME_KEY), server.url)}

        async def run() -> int:
            with WorkspaceSources(endpoints, now=lambda: T0, timeout=2.0) as source:
                with pytest.raises(ValueError, match="base_url"):
                    source.reconfigure(
                        endpoints={
                            "acme": Endpoint(SecretStr(ACME_KEY), server.url),
                            "beta": Endpoint(SecretStr(BETA_KEY), "ftp://nowhere"),
                        },
                        timeout=2.0,
                        concurrency=2,
                    )
                return (await source.poll("acme/workspace", None)).count

        assert asyncio.run(run()) == 4


# -- the commands ---------------------------------------------------------------------


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_lists_each_workspace_its_key_by_name_and_its_host(tmp_path: Path) -> None:
    """`check` says where each workspace's key came from (never the key), or where it was
    looked for, and its host."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        WORKSPACES + '[[rules]]\nname = "busy"\nkind = "threshold"\nabove = 3\n', "utf-8"
    )
    env = base_env(tmp_path / "state", ACME_ELEVENLABS_API_KEY=ACME_KEY)
    done = cli("check", "--config", str(rules), "--credentials-dir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("5 series (2 workspaces + 3 agents), poll every 15s")
    acme = next(line for line in lines if line.startswith("  workspace acme:"))
    beta = next(line for line in lines if line.startswith("  workspace beta:"))
    assert acme.startswith("  workspace acme: API key from $ACME_ELEVENLABS_API_KEY; host ")
    assert "acme/support, acme/sales" in acme
    assert "alerts to #acme" in acme
    assert beta.startswith(
        "  workspace beta: API key NOT SET: set the credential elevenlabs_api_key_beta"
        " (needed by run and poll); host api.eu.residency.elevenlabs.io"
    )
    assert (
        "  busy: threshold count > 3 on acme/workspace, beta/workspace [warning] -> #acme, #oncall"
    ) in lines
    assert ACME_KEY not in done.stdout + done.stderr


OWN_PLANS = PLANS.replace("\n[plan]\nconcurrency_limit = 50\n", "").replace(
    'base_url = "https://api.eu.residency.elevenlabs.io/"\n',
    'base_url = "https://api.eu.residency.elevenlabs.io/"\n'
    "[workspaces.plan]\nconcurrency_limit = 50\n",
)


@pytest.mark.parametrize("head", [PLANS, OWN_PLANS], ids=["top-level-plan", "only-own-plans"])
def test_check_shows_what_a_percentage_resolved_to_in_each_workspace_s_plan(
    tmp_path: Path, head: str
) -> None:
    """A rule whose percentage resolves differently per workspace plan (acme's own limit
    10, beta's 50: its own or the top-level [plan]) gets a line per plan, with the level
    and the limit it came from, on that plan's series; so do `[plan]`'s built-in rules."""
    rules = tmp_path / "rules.toml"
    rules.write_text(head + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = "80%"\n')
    env = base_env(tmp_path / "state", ACME_ELEVENLABS_API_KEY=ACME_KEY)
    done = cli("check", "--config", str(rules), env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("  r:", "  at-cap"))]
    rejected = "the plan's limit (no burst): new calls are rejected"
    assert lines == [
        "  r: threshold count > 8 on acme/workspace [warning] (above 80% of 10 = 8) -> #acme",
        "  r: threshold count > 40 on beta/workspace [warning] (above 80% of 50 = 40) -> #oncall",
        f"  at-capacity: built in by [plan]: count >= 10, {rejected} on acme/workspace"
        " [critical] -> #acme",
        f"  at-capacity: built in by [plan]: count >= 50, {rejected} on beta/workspace"
        " [critical] -> #oncall",
    ]


def test_check_reads_a_workspace_key_from_its_credential_file(tmp_path: Path) -> None:
    """The credential file `elevenlabs_api_key_<name>` supplies a key; `check` names the
    file, not the key."""
    rules = tmp_path / "rules.toml"
    rules.write_text(WORKSPACES, encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "elevenlabs_api_key_beta").write_text(BETA_KEY + "\n", encoding="utf-8")
    env = base_env(tmp_path / "state", ACME_ELEVENLABS_API_KEY=ACME_KEY)
    done = cli("check", "--config", str(rules), "--credentials-dir", str(credentials), env=env)
    assert done.returncode == 0, done.stderr
    assert "  workspace beta: API key from credential elevenlabs_api_key_beta; " in done.stdout
    assert BETA_KEY not in done.stdout + done.stderr


def test_poll_without_a_workspace_key_names_the_workspace_and_where_to_put_it(
    tmp_path: Path,
) -> None:
    """`poll` (and `run`) refuse to start without every workspace's key: one line each."""
    rules = tmp_path / "rules.toml"
    rules.write_text(WORKSPACES, encoding="utf-8")
    done = cli("poll", "--config", str(rules), env=base_env(tmp_path / "state"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"{rules}: workspaces (acme): no API key: set $ACME_ELEVENLABS_API_KEY or the"
        " credential elevenlabs_api_key_acme (needed by run and poll)",
        f"{rules}: workspaces (beta): no API key: set the credential elevenlabs_api_key_beta"
        " (needed by run and poll)",
    ]


def test_poll_prints_every_workspace_s_series_and_never_a_key(tmp_path: Path) -> None:
    """`poll` reaches each workspace with its key; a refused one fails alone."""
    with (
        FakeElevenLabs(api_key=ACME_KEY, count=4) as acme,
        FakeElevenLabs(api_key=BETA_KEY, count=7) as beta,
    ):
        acme.add_agent("agent_acme_support", 1)
        acme.add_agent("agent_acme_sales", 2)
        beta.add_agent("agent_beta_support", 3)
        body = WORKSPACES.replace(
            'channel = "#acme"\n', f'channel = "#acme"\nbase_url = "{acme.url}"\n'
        ).replace("https://api.eu.residency.elevenlabs.io/", beta.url)
        rules = tmp_path / "rules.toml"
        rules.write_text(body, encoding="utf-8")
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "elevenlabs_api_key_beta").write_text("sk_wrong_key_1234", "utf-8")
        env = base_env(
            tmp_path / "state",
            ACME_ELEVENLABS_API_KEY=ACME_KEY,
            CREDENTIALS_DIRECTORY=str(credentials),
        )
        done = cli("poll", "--json", "--config", str(rules), env=env)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["series"], line.get("count", line.get("error"))) for line in lines] == [
        ("acme/workspace", 4),
        ("acme/support", 1),
        ("acme/sales", 2),
        ("beta/workspace", PollFailure.REJECTED_KEY.value),
        ("beta/support", PollFailure.REJECTED_KEY.value),
    ]
    assert ACME_KEY not in done.stdout + done.stderr
    assert "sk_wrong_key_1234" not in done.stdout + done.stderr


def test_status_groups_series_by_workspace(tmp_path: Path) -> None:
    """`status` shows each workspace's series under its name, its own series first;
    `--json` names the workspace of each."""
    state = tmp_path / "state"
    now = datetime.now(UTC).replace(microsecond=0)
    with Store.open(Store.default_path(state)) as store:
        store.apply(
            samples=[
                Sample("beta/support", now, 1),
                Sample("acme/support", now, 2),
                Sample("beta/workspace", now, 3),
                Sample("acme/workspace", now, 4),
            ],
            alerts=[],
            notifications=[],
        )
    done = cli("status", env=base_env(state))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("series:")
    shown = [re.sub(r"\s+\d+\s+\S+ ago$", "", line) for line in lines[start + 1 : start + 7]]
    assert shown == [
        "  workspace acme:",
        "    acme/workspace",
        "    acme/support",
        "  workspace beta:",
        "    beta/workspace",
        "    beta/support",
    ]
    report = json.loads(cli("status", "--json", env=base_env(state)).stdout)
    assert [(s["workspace"], s["series"]) for s in report["series"]] == [
        ("acme", "acme/workspace"),
        ("acme", "acme/support"),
        ("beta", "beta/workspace"),
        ("beta", "beta/support"),
    ]


def test_replay_reads_workspace_qualified_series(tmp_path: Path) -> None:
    """`replay` takes `acme/workspace` in the scope column and reports on it; a bare
    `workspace` (or no scope) in a file with [[workspaces]] says how to name it."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        WORKSPACES + '[[rules]]\nname = "busy"\nkind = "threshold"\nabove = 5\n', "utf-8"
    )
    recorded = tmp_path / "counts.csv"
    recorded.write_text(
        "timestamp,count,scope\n"
        "2026-01-05T12:00:00Z,1,acme/workspace\n"
        "2026-01-05T12:00:15Z,9,acme/workspace\n"
        "2026-01-05T12:00:15Z,9,beta/support\n",
        "utf-8",
    )
    done = cli("replay", str(recorded), "--json", "--config", str(rules), env=base_env(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["rule"], x["scope"], x["state"]) for x in lines] == [
        ("busy", "acme/workspace", "firing")
    ]
    recorded.write_text("2026-01-05T12:00:00Z,1\n", "utf-8")
    done = cli("replay", str(recorded), "--config", str(rules), env=base_env(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        "unknown series 'workspace': with [[workspaces]] name it as workspace/series,"
        " e.g. 'acme/sales'"
    ) in done.stderr


def silence_add(rules: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`watchdog silence add` for the rule `r` on `rules`, for an hour."""
    Store.open(Store.default_path(state)).close()  # as `watchdog run` leaves it
    return cli(
        *("silence", "add", "--config", str(rules), "--rule", "r", "--for", "1h"),
        *("--comment", "client maintenance", *args),
        env=base_env(state),
    )


def test_silence_add_takes_the_scope_words_of_a_mute(tmp_path: Path) -> None:
    """`--scope` takes `<ws>/*` (every series of one workspace), a series and `*` (every
    series, as no scope); the silence made covers what the words say."""
    rules = tmp_path / "rules.toml"
    rules.write_text(WORKSPACES + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 3\n')
    state = tmp_path / "state"
    for scope in ("beta/*", "acme/sales", "*"):
        done = silence_add(rules, state, "--scope", scope)
        assert done.returncode == 0, done.stderr
    with Store.open(Store.default_path(state)) as store:
        made = store.silences(datetime.now(UTC))
    assert [s.scope for s in made] == ["beta/*", "acme/sales", None]
    one_workspace = made[0]
    assert [s for s in SERIES if one_workspace.covers("r", s, datetime.now(UTC))] == [
        "beta/workspace",
        "beta/support",
    ]


@pytest.mark.parametrize(
    ("head", "scope", "message"),
    [
        (WORKSPACES, "gamma/*", "unknown workspace 'gamma' in 'gamma/*': use one of acme, beta"),
        (
            WORKSPACES,
            "acem/sales",
            "unknown workspace 'acem' in 'acem/sales': did you mean 'acme'?",
        ),
        (
            WORKSPACES,
            "beta/sales",
            "unknown series 'beta/sales': did you mean 'acme/sales'?",
        ),
        (
            WORKSPACES,
            "billing",
            "unknown series 'billing': use one of *, acme/*, beta/*, acme/workspace,"
            " acme/support, acme/sales, beta/workspace, beta/support, watchdog",
        ),
        (
            '[[agents]]\nname = "support"\nid = "agent_1"\n',
            "acme/*",
            "unknown workspace 'acme' in 'acme/*': the file has no [[workspaces]]",
        ),
    ],
    ids=[
        "unknown-workspace",
        "misspelt-workspace",
        "unknown-series",
        "nothing-close",
        "no-workspaces",
    ],
)
def test_silence_add_names_an_unknown_workspace_or_series_and_what_exists(
    tmp_path: Path, head: str, scope: str, message: str
) -> None:
    """A `--scope` naming no workspace or series of the file is one line saying what there
    is, exit 2, no traceback."""
    rules = tmp_path / "rules.toml"
    rules.write_text(head + '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 3\n')
    done = silence_add(rules, tmp_path / "state", "--scope", scope)
    assert (done.returncode, done.stderr) == (2, f"watchdog silence add: --scope: {message}\n")


def test_silence_add_without_workspaces_takes_a_star_and_plain_names(tmp_path: Path) -> None:
    """In a file without [[workspaces]], `--scope` takes `*` (every series) and the plain
    series names, as before."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[agents]]\nname = "support"\nid = "agent_1"\n'
        '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 3\n'
    )
    state = tmp_path / "state"
    for scope in ("*", "support", "workspace"):
        done = silence_add(rules, state, "--scope", scope)
        assert done.returncode == 0, done.stderr
    with Store.open(Store.default_path(state)) as store:
        assert [s.scope for s in store.silences(datetime.now(UTC))] == [
            None,
            "support",
            "workspace",
        ]


def test_a_reload_moves_a_workspace_to_its_new_host_and_key(tmp_path: Path) -> None:
    """SIGHUP's reload hands each workspace's new key and host to its client: the next
    poll of that workspace goes there (a moved residency host, a rotated key)."""
    config = workspaces()
    with (
        FakeElevenLabs(api_key=ACME_KEY, count=4) as old_host,
        FakeElevenLabs(api_key=BETA_KEY, count=8) as new_host,
        Store.open(Store.default_path(tmp_path / "state")) as store,
        WorkspaceSources(
            {"acme": Endpoint(SecretStr(ACME_KEY), old_host.url)}, now=lambda: T0, timeout=2.0
        ) as source,
    ):
        moved = {"acme": Endpoint(SecretStr(BETA_KEY), new_host.url)}

        async def run() -> tuple[int, int]:
            daemon = Daemon(
                config=config,
                source=source,
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=SystemClock(),
                load=lambda: Reloaded(config, None, "", workspace_endpoints=moved),
            )
            before = (await source.poll("acme/workspace", None)).count
            assert daemon.reload()
            return before, (await source.poll("acme/workspace", None)).count

        assert asyncio.run(run()) == (4, 8)
        assert [r.headers["xi-api-key"] for r in new_host.requests] == [BETA_KEY]


def test_the_readme_example_is_valid() -> None:
    """The README's "Several workspaces" example parses, with the series it promises."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Several workspaces", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(example, source="README.md")
    assert [name for name, _ in config.series] == [
        "acme/workspace",
        "acme/support",
        "globex/workspace",
    ]
    assert config.scopes["near-limit"] == ("acme/workspace",)


def test_a_pasted_workspace_key_with_a_stray_character_is_refused_by_name(
    tmp_path: Path,
) -> None:
    """A key with a space or line break in it names the workspace and where the key was
    found, never the key."""
    rules = tmp_path / "rules.toml"
    rules.write_text(WORKSPACES, encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "elevenlabs_api_key_beta").write_text("sk_beta secret", "utf-8")
    env = base_env(
        tmp_path / "state",
        ACME_ELEVENLABS_API_KEY=ACME_KEY,
        CREDENTIALS_DIRECTORY=str(credentials),
    )
    done = cli("poll", "--config", str(rules), env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{rules}: workspaces (beta): the API key in credential elevenlabs_api_key_beta: must"
        " be one line of printable ASCII without spaces"
    ]
    assert "secret" not in done.stdout + done.stderr
