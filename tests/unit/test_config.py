"""Settings precedence (defaults < file < env < flags) and live-config validation."""

from pathlib import Path

import pytest

from app.cli import build_parser
from app.config import ConfigError, RoutingConfig, load_settings, validate_routing


def _flags(*argv):
    return vars(build_parser().parse_args(["serve", *argv]))


def test_defaults():
    settings = load_settings(_flags(), environ={})
    assert (settings.host, settings.port, settings.health_interval) == ("127.0.0.1", 8000, 60.0)
    assert settings.data_dir == Path("./data") and settings.log_dir == Path("./logs")
    assert settings.mongo_url is None and settings.node == ()
    assert settings.explicit == frozenset()


def test_file_then_env_then_flags(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nhealth_interval = 10\nnode = ["http://a:1"]\n')
    env = {"AIVONX_PORT": "9002", "AIVONX_HEALTH_INTERVAL": "20"}
    settings = load_settings(_flags("--config", str(config), "--port", "9003"), environ=env)
    assert settings.port == 9003            # flag beats env and file
    assert settings.health_interval == 20.0  # env beats file
    assert settings.host == "0.0.0.0"       # file beats default
    assert settings.node == ("http://a:1",)
    assert {"port", "health_interval", "host", "node"} <= settings.explicit


def test_config_file_from_env(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("db_name = 'fleet'\n")
    assert load_settings(_flags(), environ={"AIVONX_CONFIG": str(config)}).db_name == "fleet"


def test_repeatable_node_flag_and_env_list():
    assert load_settings(_flags("--node", "http://a:1", "--node", "http://b:2"), environ={}).node == (
        "http://a:1", "http://b:2")
    assert load_settings(_flags(), environ={"AIVONX_NODE": "http://a:1, http://b:2"}).node == (
        "http://a:1", "http://b:2")


def test_bad_values_name_the_setting_and_source(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(_flags(), environ={"AIVONX_PORT": "eighty"})
    assert "port" in info.value.errors and "environment" in info.value.errors["port"]
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(_flags("--config", str(config)), environ={})
    assert "prot" in str(info.value)


def test_secrets_are_env_only_and_not_in_repr():
    settings = load_settings(_flags(), environ={"AIVONX_JWT_SECRET": "s3cr3t-value", "AIVONX_ADMIN_PASSWORD": "pw"})
    assert settings.jwt_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--jwt-secret", "x"])


def test_every_flag_is_documented():
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for flag in ("--host", "--port", "--data-dir", "--log-dir", "--mongo-url", "--db-name", "--node",
                 "--health-interval", "--config"):
        assert flag in text


def test_routing_validation_reports_every_bad_field():
    with pytest.raises(ConfigError) as info:
        validate_routing({"strategy": "fastest", "fall": 0, "max_attempts": "3", "nope": 1,
                          "health_interval": float("nan")})
    assert set(info.value.errors) == {"strategy", "fall", "max_attempts", "nope", "health_interval"}


def test_routing_validation_applies_on_base():
    config = validate_routing({"strategy": "round_robin", "cors_origins": ["https://a.example/"]})
    assert config.strategy == "round_robin" and config.cors_origins == ("https://a.example",)
    assert validate_routing({"fall": 5}, config).strategy == "round_robin"
    assert RoutingConfig().to_json()["cors_origins"] == []
