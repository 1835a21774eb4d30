"""The connectors file: what it may say, and a clear error naming the connector and the key for what it may not."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from hearth.connectors.config import ConfigError, parse


def table(**overrides):
    return {"connectors": {"ehr": {"kind": "fhir-poll", "base": "https://ehr.example/fhir", "types": ["Patient"],
                                   **overrides}}}


def test_defaults_and_durations():
    [config] = parse(table(every="5m", timeout="1500ms")).values()
    assert config.every == 300 and config.timeout == 1.5 and config.conflict == "upstream-wins"
    assert config.retries == 5 and config.concurrency == 4 and config.auth.kind == "none"
    assert parse(table(every="continuous"))["ehr"].every is None
    assert parse(table(since=date(2024, 1, 1)))["ehr"].since == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert parse(table(since="2024-01-01T02:00:00+02:00"))["ehr"].since == datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("overrides,says", [
    ({"kind": "poll"}, "'kind' is one of"),
    ({"base": "ftp://x"}, "'base'"),
    ({"types": []}, "'types'"),
    ({"types": ["Bogus"]}, "Bogus"),
    ({"mask": ["Observation.value"]}, "does not bring: Observation"),
    ({"every": "soon"}, "'every' is a duration"),
    ({"since": "yesterday"}, "'since'"),
    ({"concurrency": 0.5}, "'concurrency' must be a whole number"),
    ({"retries": -1}, "'retries' must be a whole number of at least 0"),
    ({"page_size": 0}, "'page_size'"),
    ({"then_poll": "false"}, "'then_poll' is true or false"),
    ({"conflict": "merge"}, "'conflict'"),
    ({"auth": {"kind": "backend-services", "client_id": "x"}}, "needs key_file"),
    ({"auth": {"kind": "bearer", "token": "t", "alg": "HS256"}}, "RS384 or ES384"),
    ({"auth": "basic"}, "'auth'"),
    ({"colour": "blue"}, "unknown key(s) colour"),
])
def test_what_cannot_be_run_is_refused_naming_connector_and_key(overrides, says):
    with pytest.raises(ConfigError) as refused:
        parse(table(**overrides))
    assert "connector 'ehr'" in str(refused.value) and says in str(refused.value)


def test_names_are_part_of_ids_so_they_are_plain():
    with pytest.raises(ConfigError, match="lower-case"):
        parse({"connectors": {"EHR.one": table()["connectors"]["ehr"]}})
