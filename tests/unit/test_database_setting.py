"""``JIAYUAN_DATABASE_URL``: a PostgreSQL URL or nothing; a wrong one stops the start with words
naming the variable, and its password is never repeated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from jiayuan.settings import Settings, shown_url

SECRET = "hunter2-not-for-logs"


def test_unset_or_empty_keeps_the_sqlite_files() -> None:
    assert Settings().database() is None
    assert Settings(database_url="").database() is None


def test_a_primary_and_its_standby_are_one_url_as_libpq_reads_it() -> None:
    url = (
        f"postgresql://jiayuan:{SECRET}@db1.example:5432,db2.example:5433/jiayuan"
        "?target_session_attrs=read-write"
    )
    assert Settings(database_url=url).database() == url
    assert shown_url(url) == (
        "postgresql://jiayuan:***@db1.example:5432,db2.example:5433/jiayuan"
        "?target_session_attrs=read-write"
    )


def test_a_postgresql_url_is_kept_as_a_secret() -> None:
    url = f"postgresql://jiayuan:{SECRET}@db.example:5432/jiayuan"
    s = Settings(database_url=url)
    assert s.database() == url
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())
    assert shown_url(url) == "postgresql://jiayuan:***@db.example:5432/jiayuan"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"mysql://u:{SECRET}@h/db", "expected postgresql://"),
        (f"postgresql://u:{SECRET}@h:99999/db", "not a URL"),
        (f"postgresql://u:{SECRET}@h:5432/", "no database name"),
        (f"postgresql://u:{SECRET}@/db", "no host"),
        (f"postgresql://u:{SECRET}@h1:5432,h2:5x/db", "not a URL"),
        (f"postgresql://u:{SECRET}@h/db?no_such_option=1", "not a URL"),
        (f"postgresql://u:{SECRET}@[::1/db", "not a URL"),
        # the password as a query parameter, which libpq takes as well
        (f"mysql://u@h/db?password={SECRET}", "expected postgresql://"),
        (f"postgresql://u@h:99999/db?password={SECRET}", "not a URL"),
        (f"postgresql://u@h:5432/?password={SECRET}", "no database name"),
        (f"postgresql://u@/db?password={SECRET}", "no host"),
        (f"postgresql://u@h1:5432,h2:5x/db?password={SECRET}", "not a URL"),
        (f"postgresql://u@h/db?password={SECRET}&no_such_option=1", "not a URL"),
        (f"postgresql://u@h/db?no_such_option=1&password={SECRET}", "not a URL"),
        (f"postgresql://u@h/db?password={SECRET}=2", "not a URL"),
        (f"postgresql://u@h/db?password={SECRET}&port=5432,5433", "2 ports for 1 host"),
    ],
)
def test_a_wrong_url_is_refused_naming_the_variable_not_the_password(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(database_url=url)
    assert "JIAYUAN_DATABASE_URL" in str(e.value) and says in str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (f"password={SECRET}&sslmode=require", "password=***&sslmode=require"),
        (
            f"sslmode=require&password={SECRET}&application_name=jiayuan",
            "sslmode=require&password=***&application_name=jiayuan",
        ),
        (f"pass%77ord={SECRET}", "pass%77ord=***"),  # libpq decodes the name too
        (f"password={SECRET}#2&sslmode=require", "password=***&sslmode=require"),  # # is in it
        (
            f"password=&sslmode=require&password={SECRET}",
            "password=***&sslmode=require&password=***",
        ),
    ],
)
def test_a_password_given_as_a_query_parameter_is_hidden_too(query: str, shown: str) -> None:
    url = f"postgresql://jiayuan@db.example:5432/jiayuan?{query}"
    assert Settings(database_url=url).database() == url  # libpq takes it
    assert shown_url(url) == f"postgresql://jiayuan@db.example:5432/jiayuan?{shown}"
    both = url.replace("jiayuan@", f"jiayuan:{SECRET}@", 1)
    assert shown_url(both) == f"postgresql://jiayuan:***@db.example:5432/jiayuan?{shown}"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://jiayuan:{SECRET}?x@db.example/jiayuan?sslmode=require",
        f"postgresql://jiayuan:{SECRET}#x@db.example/jiayuan",
        f"postgresql://jiayuan:{SECRET}@x@db.example/jiayuan",
        # libpq: password "ab", host "c", database "d…@host/db"; urlsplit: the last @
        f"postgresql://u:ab@c/d{SECRET}@host/db",
        f"postgresql://u:12/{SECRET}@host/db",  # libpq: no user info, host u, port 12
        f"postgresql://h?password={SECRET}:y@z/db",  # libpq: user "h?password=…", password y
        f"postgresql://u@h/db?password=p@{SECRET}",
    ],
)
def test_a_url_readers_could_split_apart_is_refused_and_never_shown(url: str) -> None:
    """Where an @, /, ? or # that is not percent-encoded lets libpq and a URL parser find the
    user info in different places, a masked copy could show part of the password: refused at
    start, in words that name what to write instead, and shown masked whole."""
    with pytest.raises(ValidationError) as e:
        Settings(database_url=url)
    assert "percent-encoded" in str(e.value) and SECRET not in str(e.value)
    assert shown_url(url) == "postgresql://***"


def test_a_password_percent_encoded_is_taken_and_hidden() -> None:
    url = f"postgresql://jiayuan:{SECRET}%40%2F%3F%23x@db.example/jiayuan?sslmode=require"
    assert Settings(database_url=url).database() == url
    assert shown_url(url) == "postgresql://jiayuan:***@db.example/jiayuan?sslmode=require"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql://u:{SECRET}@h1/db?port=5432,5433", "2 ports for 1 host:"),
        (f"postgresql://u:{SECRET}@h1/db?host=a&port=1,2,3", "3 ports for 1 host:"),
        (f"postgresql://u:{SECRET}@h1,h2/db?port=1,2,3", "3 ports for 2 hosts:"),
        (f"postgresql://u:{SECRET}@h1:1,h2:2,h3/db?port=1,2", "2 ports for 3 hosts:"),
        (f"postgresql://u@/db?hostaddr=10.0.0.1,10.0.0.2&port=1,2,3&password={SECRET}", "3 ports"),
        (f"postgresql://u:{SECRET}@h1,h2/db?hostaddr=10.0.0.1", "2 host names for 1 hostaddr"),
    ],
)
def test_ports_that_do_not_match_the_hosts_are_refused_as_libpq_would(url: str, says: str) -> None:
    """libpq takes one port for all the hosts, or one for each (the hosts: the hostaddr list when
    given, else the host list); any other count fails only at connect. Refused at start."""
    with pytest.raises(ValidationError) as e:
        Settings(database_url=url)
    assert "JIAYUAN_DATABASE_URL" in str(e.value) and says in str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    "hosts",
    [
        "h1:5432,h2:5433/db",
        "h1,h2/db?port=5432",
        "h1,h2/db",
        "h1:5432,h2/db",
        "/db?host=a,b&port=1,2",
        "h/db?host=a,b,c&port=1",
        "h1,h2/db?hostaddr=10.0.0.1,10.0.0.2&port=1,2",
        "/db?hostaddr=10.0.0.1,10.0.0.2&port=5432",
    ],
)
def test_ports_that_match_the_hosts_are_taken(hosts: str) -> None:
    url = f"postgresql://u:{SECRET}@{hosts}"
    assert Settings(database_url=url).database() == url


def test_ingest_processes_are_refused_on_postgresql_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="JIAYUAN_INGEST_PROCESSES above 1 cannot be used"):
        Settings(database_url="postgresql://u@h/db", ingest_processes=2)


def jiayuan_run(data_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """``jiayuan run`` in a child process with this database URL, to its end."""
    env = dict(os.environ, JIAYUAN_DATA_DIR=str(data_dir), JIAYUAN_DATABASE_URL=database_url)
    return subprocess.run(
        [sys.executable, "-m", "jiayuan.cli", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_jiayuan_run_with_a_wrong_url_exits_saying_which_setting(tmp_path: Path) -> None:
    done = jiayuan_run(tmp_path, f"postgres//u:{SECRET}@h/db")
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "JIAYUAN_DATABASE_URL" in said and SECRET not in said


def test_a_backtest_with_the_database_unreachable_says_so_in_words(tmp_path: Path) -> None:
    """Backtests read PostgreSQL when the service keeps its journal there: with the database
    away, the command and the API (503) say so in words, never a traceback or the password."""
    from devtools.broker import free_port
    from jiayuan.backtest import Unavailable, run

    url = f"postgresql://u:{SECRET}@127.0.0.1:{free_port()}/db"
    settings = Settings(data_dir=tmp_path, database_url=url)
    with pytest.raises(Unavailable, match=r"the database \(JIAYUAN_DATABASE_URL\) cannot be") as e:
        run(settings, [], 0.0, 86_400.0)
    assert SECRET not in str(e.value)


def test_jiayuan_run_with_an_unreachable_database_exits_saying_so(tmp_path: Path) -> None:
    from devtools.broker import free_port

    done = jiayuan_run(tmp_path, f"postgresql://u:{SECRET}@127.0.0.1:{free_port()}/db")
    assert done.returncode == 2
    assert "the database (JIAYUAN_DATABASE_URL) cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
