"""Tests of council.config: the model catalog, policy overrides, database and budget from one TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.config.catalog import ModelDefaults, ModelEntry, resolve_catalog
from council.config.settings import CONFIG_ENV, config_from_dict, load_config, shipped_policies
from council.errors import ConfigError
from council.config.policy import TaskPolicy


def _models() -> dict:
    return {
        "fast-one": {"model": "openai/gpt-4o-mini", "quality": 70, "api_key_env": "OPENAI_API_KEY"},
        "local-llama": {"model": "ollama/llama3", "api_base": "http://127.0.0.1:11434", "local": True,
                        "capabilities": ["text", "vision"], "latency_tier": "slow"},
    }


# ------------------------------------------------------------------------------------------ models


def test_model_entries_are_named_from_their_table_keys():
    cfg = config_from_dict({"models": _models()})
    assert [m.name for m in cfg.models] == ["fast-one", "local-llama"]
    fast, local = cfg.models
    assert fast.model == "openai/gpt-4o-mini"
    assert fast.quality == 70
    assert fast.api_key_env == "OPENAI_API_KEY"
    assert fast.capabilities is None  # unset: filled later from litellm's map
    assert local.local is True
    assert local.api_base == "http://127.0.0.1:11434"
    assert local.capabilities == frozenset({"text", "vision"})
    assert local.latency_tier == "slow"
    assert cfg.database is None and cfg.budget_usd is None and cfg.source is None


def test_database_budget_and_source_are_kept(write_config):
    path = write_config({"database": "sqlite:////tmp/x.db", "budget_usd": 2.5, "models": _models()})
    cfg = load_config(path)
    assert cfg.database == "sqlite:////tmp/x.db"
    assert cfg.budget_usd == 2.5
    assert cfg.source == str(path)
    assert [m.name for m in cfg.models] == ["fast-one", "local-llama"]


def test_toml_file_and_dict_give_the_same_config(write_config):
    tables = {"budget_usd": 1.0, "models": _models(), "policies": {"research": {"panel_size": 2}}}
    from_file = load_config(write_config(tables))
    from_dict = config_from_dict(tables)
    assert from_file.models == from_dict.models
    assert from_file.policies == from_dict.policies


def test_no_models_is_an_empty_catalog_not_an_error():
    cfg = config_from_dict({})
    assert cfg.models == []
    assert set(shipped_policies()) <= set(cfg.policies)


# ------------------------------------------------------------------------------------------ policies


def test_shipped_policies_are_loaded_unchanged_without_overrides():
    shipped = shipped_policies()
    assert {"research", "fact_check", "adjudication"} <= set(shipped)
    cfg = config_from_dict({})
    research = cfg.policies["research"]
    assert research.name == "research"
    for field, value in shipped["research"].items():
        got = getattr(research, field)
        assert (list(got) if isinstance(got, tuple) else got) == value, field
    assert cfg.policies["adjudication"].panel_size == shipped["adjudication"]["panel_size"] == 1


def test_policy_overrides_are_merged_over_the_shipped_table():
    shipped = shipped_policies()["research"]
    cfg = config_from_dict({"policies": {"research": {"panel_size": 5, "required_capabilities": ["text", "vision"]}}})
    research = cfg.policies["research"]
    assert research.panel_size == 5
    assert research.required_capabilities == ("text", "vision")
    # Every other field still comes from graphs/policies.toml.
    assert research.max_call_usd == shipped["max_call_usd"]
    assert research.timeout_s == shipped["timeout_s"]
    assert research.description == shipped["description"]
    assert research.max_input_usd_per_mtok == shipped["max_input_usd_per_mtok"]
    # Other policies are untouched.
    assert cfg.policies["fact_check"] == config_from_dict({}).policies["fact_check"]


def test_a_new_policy_name_gets_the_model_defaults():
    cfg = config_from_dict({"policies": {"summarize": {"panel_size": 2, "max_output_tokens": 300}}})
    p = cfg.policies["summarize"]
    assert p.name == "summarize"
    assert (p.panel_size, p.max_output_tokens) == (2, 300)
    assert p == TaskPolicy(name="summarize", panel_size=2, max_output_tokens=300)


def test_policy_version_changes_when_any_field_changes_and_is_stable_otherwise():
    base = config_from_dict({}).policies
    again = config_from_dict({}).policies
    assert {n: p.version for n, p in base.items()} == {n: p.version for n, p in again.items()}
    for name, p in base.items():
        assert len(p.version) == 12 and all(c in "0123456789abcdef" for c in p.version)
        assert p.ref == f"{name}@{p.version}"

    changed = config_from_dict({"policies": {"research": {"panel_size": 4}}}).policies
    assert changed["research"].version != base["research"].version
    assert changed["fact_check"].version == base["fact_check"].version
    assert changed["adjudication"].version == base["adjudication"].version

    # Different fields give different versions; overriding a field with its shipped value changes nothing.
    other = config_from_dict({"policies": {"research": {"timeout_s": 10.0}}}).policies["research"]
    assert other.version not in {base["research"].version, changed["research"].version}
    same_value = shipped_policies()["research"]["panel_size"]
    unchanged = config_from_dict({"policies": {"research": {"panel_size": same_value}}}).policies["research"]
    assert unchanged.version == base["research"].version


def test_policy_version_is_independent_of_key_order_in_the_file(write_config):
    a = load_config(write_config({"policies": {"research": {"panel_size": 2, "timeout_s": 5.0}}}))
    b = load_config(write_config({"policies": {"research": {"timeout_s": 5.0, "panel_size": 2}}}))
    assert a.policies["research"].version == b.policies["research"].version


# ------------------------------------------------------------------------------------------ errors


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path):
    path = tmp_path / "nope" / "council.toml"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "not found" in str(err.value)
    assert str(path) in str(err.value)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "cannot read" in str(err.value)


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text('[models.a]\nmodel = "openai/x\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "not valid TOML" in msg
    assert "line 2" in msg  # tomllib's position survives into the message


def test_duplicate_model_table_is_a_config_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "dup.toml"
    path.write_text('[models.a]\nmodel = "openai/x"\n\n[models.a]\nmodel = "openai/y"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "not valid TOML" in str(err.value)


def test_duplicate_model_names_in_a_python_config_are_refused_when_resolved():
    entries = [ModelEntry(name="a", model="openai/x"), ModelEntry(name="a", model="openai/y")]
    with pytest.raises(ConfigError, match="model 'a' is configured twice"):
        resolve_catalog(entries, lambda e: ModelDefaults(provider="openai"))


def test_unknown_top_level_key_names_file_and_key(write_config):
    path = write_config({"budget": 3.0, "models": _models()})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config {path}: unknown key 'budget'"


@pytest.mark.parametrize(
    ("tables", "field", "detail"),
    [
        ({"models": {"a": {"model": "openai/x", "quality": "high"}}}, "models.a: quality", "valid number"),
        ({"models": {"a": {"model": 42}}}, "models.a: model", "valid string"),
        ({"models": {"a": {"quality": 3}}}, "models.a: model", "Field required"),
        ({"models": {"a": {"model": "openai/x", "colour": "red"}}}, "models.a: colour", "Extra inputs"),
        ({"models": {"a": {"model": "openai/x", "capabilities": ["telepathy"]}}}, "models.a: capabilities", ""),
        ({"models": {"a": {"model": "openai/x", "latency_tier": "instant"}}}, "models.a: latency_tier", ""),
        ({"policies": {"research": {"panel_size": "three"}}}, "policies.research: panel_size", "valid integer"),
        ({"policies": {"research": {"panel_size": 0}}}, "policies.research: panel_size", "greater than or equal to 1"),
        ({"policies": {"research": {"fallback": "sometimes"}}}, "policies.research: fallback", ""),
        ({"policies": {"research": {"bogus": 1}}}, "policies.research: bogus", "Extra inputs"),
        ({"budget_usd": -1.0}, "budget_usd", "greater than 0"),
        ({"budget_usd": "lots"}, "budget_usd", ""),
    ],
)
def test_bad_field_is_a_config_error_naming_file_and_field(write_config, tables, field, detail):
    path = write_config(tables)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"config {path}: {field}"), msg
    assert detail in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({"models": ["openai/x"]}, "[models] must be a table of model entries"),
        ({"models": {"a": "openai/x"}}, "models.a must be a table"),
        ({"policies": ["research"]}, "[policies] must be a table"),
        ({"policies": {"research": 3}}, "policies.research must be a table"),
    ],
)
def test_wrong_shape_is_a_config_error(tables, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tables, source="/etc/council.toml")
    assert str(err.value) == f"config /etc/council.toml: {expected}"


def test_bad_model_name_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"models": {"bad name": {"model": "openai/x"}}})
    assert "models.bad name" in str(err.value)
    assert "letters, digits" in str(err.value)


# ------------------------------------------------------------------------------------------ where


def test_config_env_var_is_used_when_no_path_is_given(write_config, monkeypatch: pytest.MonkeyPatch):
    path = write_config({"budget_usd": 0.75, "models": _models()})
    monkeypatch.setenv(CONFIG_ENV, str(path))
    cfg = load_config()
    assert cfg.source == str(path)
    assert cfg.budget_usd == 0.75


def test_explicit_path_wins_over_the_env_var(write_config, monkeypatch: pytest.MonkeyPatch):
    env_path = write_config({"budget_usd": 1.0})
    arg_path = write_config({"budget_usd": 2.0})
    monkeypatch.setenv(CONFIG_ENV, str(env_path))
    assert load_config(arg_path).budget_usd == 2.0


def test_env_var_naming_a_missing_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="gone.toml"):
        load_config()


@pytest.mark.parametrize("env_value", [None, ""])
def test_no_config_at_all_is_a_config_error_mentioning_the_flag(monkeypatch: pytest.MonkeyPatch, env_value):
    if env_value is None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(CONFIG_ENV, env_value)
    with pytest.raises(ConfigError) as err:
        load_config()
    assert "--config" in str(err.value)
    assert CONFIG_ENV in str(err.value)


def test_an_allowed_model_that_is_not_in_the_catalog_is_a_config_error(write_config):
    tables = {"models": {"gpt": {"model": "openai/gpt-4o-mini"}, "claude": {"model": "anthropic/claude-3-5-haiku"}},
              "policies": {"research": {"allowed_models": ["gpt", "cluade"]}}}
    with pytest.raises(ConfigError, match=r"policies.research.allowed_models: 'cluade' is not a model of the catalog "
                                          r"\(known: claude, gpt\)"):
        load_config(write_config(tables))
    tables["policies"]["research"]["allowed_models"] = ["gpt", "claude"]
    assert load_config(write_config(tables)).policies["research"].allowed_models == ("gpt", "claude")
