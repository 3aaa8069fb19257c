"""The throwaway PostgreSQL server the store and HA tests run against is a real server."""

from __future__ import annotations

import psycopg


def test_each_test_gets_its_own_empty_database_on_a_real_loopback_server(
    postgres_url: str,
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        address = conn.execute("SELECT inet_server_addr()::text").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        conn.execute("CREATE TABLE marker (x int)")
    assert version is not None
    assert int(version[0].split(".")[0]) >= 13
    assert address is not None
    assert address[0].startswith("127.0.0.1")
    assert tables == (0,)
