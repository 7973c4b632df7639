from pathlib import Path

import pytest

from configs import ConfigError, load_settings


def test_precedence_defaults_profile_env_overrides():
    s = load_settings("test", env={})
    assert s.server.port == 8011 and s.llm.max_running == 8
    s = load_settings("test", env={"HEARTH_PORT": "9001", "HEARTH_LLM_MAX_RUNNING": "4"})
    assert s.server.port == 9001 and s.llm.max_running == 4
    s = load_settings("test", env={"HEARTH_PORT": "9001"}, overrides={"server": {"port": 9002}})
    assert s.server.port == 9002


def test_profile_from_env_and_data_dir(tmp_path):
    s = load_settings(env={"HEARTH_PROFILE": "test", "HEARTH_DATA_DIR": str(tmp_path)})
    assert s.profile == "test" and s.data_dir == tmp_path
    assert s.models_dir == tmp_path / "models"
    s = load_settings("test", env={"HEARTH_MODELS_DIR": "/m"})
    assert s.models_dir == Path("/m")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"HEARTH_LLM_N_THREADS": "two"}, "llm.n_threads"),
        ({"HEARTH_PORT": "70000"}, "server.port"),
        ({"HEARTH_LLM_MAX_RUNNING": "0"}, "llm.max_running"),
        ({"HEARTH_AIRGAP": "maybe"}, "server.airgap"),
    ],
)
def test_bad_value_names_the_field(env, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings("test", env=env)


def test_unknown_profile_and_key(tmp_path):
    with pytest.raises(ConfigError, match="known profiles"):
        load_settings("nope", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[llm]\nthreads = 2\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(str(bad), env={})


def test_install_models_takes_extra_models_and_names_an_unknown_one(capsys):
    from server.cli import _parser, main

    args = _parser().parse_args(
        ["install-models", "--model", "all-mpnet-base-v2", "--model", "all-minilm-l6-v2"]
    )
    assert args.model == ["all-mpnet-base-v2", "all-minilm-l6-v2"]
    assert main(["install-models", "--profile", "test", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "nope" in err and "all-mpnet-base-v2" in err
