from app.relay.postgres.reason import reason_set, split_app_name


def test_set_airlock_reason_forms():
    assert reason_set("SET airlock.reason = 'fix it'") == "fix it"
    assert reason_set("set session airlock.reason to 'it''s fine';") == "it's fine"
    assert reason_set("SET LOCAL airlock.reason='x'") == "x"
    assert reason_set("RESET airlock.reason") == ""
    assert reason_set("SET airlock.reasonable = 'x'") is None
    assert reason_set("SET search_path = 'x'") is None
    assert reason_set("SET airlock.reason = 'x'; DROP TABLE t") is None


def test_application_name_suffix():
    assert split_app_name("run-1 | because") == ("run-1", "because")
    assert split_app_name("run-1") == ("run-1", "")
