"""Configuration as the CLI reads it (pure: no daemon)."""

from pathlib import Path

from clawdspace.config import host_url, load_settings, parse_config, resolve


def test_file_is_parsed_not_executed(tmp_path: Path):
    text = """
# comment
export CLAWDSPACE_KEY="abc def"
CLAWDSPACE_HOSTS='one:8000 two'
BASE=$(touch %s/ran)
X=${CLAWDSPACE_KEY}-x
""" % tmp_path
    v = parse_config(text, env={})
    assert v["CLAWDSPACE_KEY"] == "abc def"
    assert v["CLAWDSPACE_HOSTS"] == "one:8000 two"
    assert v["X"] == "abc def-x"
    assert not (tmp_path / "ran").exists()


def test_environment_wins_over_file_and_file_over_defaults(tmp_path: Path):
    (tmp_path / ".clawdspace").write_text("API_KEY=filekey\nKNOWN_HOSTS=\"h1:9000 h2\"\n")
    env = {"HOME": str(tmp_path), "CLAWDSPACE_STATE_DIR": str(tmp_path / "none")}
    s = load_settings(env=env)
    assert s.key == "filekey"
    assert s.urls == ["http://h1:9000", "http://h2:7777"]
    env.update(CLAWDSPACE_KEY="envkey", CLAWDSPACE_URL="http://srv:1234/")
    s = load_settings(env=env)
    assert s.key == "envkey"
    assert s.urls[0] == "http://srv:1234"


def test_local_key_file_then_dev_key(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    env = {"HOME": str(tmp_path), "CLAWDSPACE_STATE_DIR": str(state)}
    assert load_settings(env=env).key == "clawdspace_dev_key"
    (state / "api-key").write_text("cs_local\n")
    assert load_settings(env=env).key == "cs_local"
    assert load_settings(env=env).urls == ["http://localhost:7777"]


def test_host_entries():
    assert host_url("box") == "http://box:7777"
    assert host_url("box:8080") == "http://box:8080"
    assert host_url("https://x.example/") == "https://x.example"
    assert host_url("::1") == "http://[::1]:7777"
    assert host_url("[::1]:9") == "http://[::1]:9"


def test_explicit_arguments_need_no_configuration():
    assert resolve("10.0.0.1", "k") == ("http://10.0.0.1:7777", "k")
