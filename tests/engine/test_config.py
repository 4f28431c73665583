"""Config loading: defaults, YAML, overrides, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Config, ConfigError, load_config, write_config
from engine.run import DEFAULT_CONFIG, main

REPO = Path(__file__).resolve().parents[2]


def test_default_yaml_loads_and_matches_its_sections():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.model.path == "smollm2-135m"
    assert cfg.generation.backend == "local"
    assert cfg.generation.sampling.max_new_tokens == 160
    assert cfg.solver.reward.format_reward == 0.1 and cfg.solver.reward.executed_reward == 0.2
    assert cfg.rollout.group_size == 4


def test_overrides_apply_after_the_file_with_yaml_typed_values():
    cfg = load_config(
        DEFAULT_CONFIG,
        [
            "rollout.group_size=8",
            "learner.lr=3e-6",
            "algorithm.dual_clip=3",
            "generation.sglang={urls: [http://a:1, http://b:2]}",
            "rollout.dynamic_sampling=true",
            "run.name=exp 1",
            "learner.betas=[0.9, 0.95]",
            "solver.reward.status_rewards={error: -0.5}",
            "sandbox.limits.wall_s=5",
        ],
    )
    assert cfg.rollout.group_size == 8
    assert cfg.learner.lr == pytest.approx(3e-6)
    assert cfg.algorithm.dual_clip == 3.0 and isinstance(cfg.algorithm.dual_clip, float)
    assert cfg.generation.sglang == {"urls": ["http://a:1", "http://b:2"]}
    assert cfg.rollout.dynamic_sampling is True
    assert cfg.run.name == "exp 1"
    assert cfg.learner.betas == (0.9, 0.95)
    assert cfg.solver.reward.status_rewards == {"error": -0.5}
    assert cfg.sandbox.limits.wall_s == 5.0
    assert cfg.learner.algorithm.dual_clip == 3.0, "the learner sees the algorithm section"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["sandbox.limits.wall_s=5"]).sandbox.limits.wall_s == 5.0
    with pytest.raises(ConfigError, match=r"^rollout.group_size: expected int, got float 2.5$"):
        load_config(None, ["rollout.group_size=2.5"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.grop_size=8"], "unknown key rollout.grop_size; did you mean rollout.group_size?"),
        (["modle.path=x"], "unknown key modle; did you mean model?"),
        (["rollout.group_size=eight"], "rollout.group_size: expected int, got str 'eight'"),
        (["rollout.dynamic_sampling=3"], "rollout.dynamic_sampling: expected bool, got int 3"),
        (
            ["solver.extract.which=middle"],
            "solver.extract.which: expected one of first, last, concatenate, got str 'middle'",
        ),
        (["sandbox.limits.wall_s=-1"], "sandbox.limits: Limits.wall_s must be > 0, got -1.0"),
        (["algorithm.dual_clip=0.5"], "algorithm: algorithm.dual_clip must be > 1 (or None), got 0.5"),
        (["learner.betas=[0.9]"], "learner.betas: expected a list of 2 values, got list [0.9]"),
        (["learner.algorithm.kl_coef=1"], "learner.algorithm: set the top-level algorithm section instead"),
        (["data.eval=[1]"], "data.eval[0]: expected str, got int 1"),
        (["group_size=8"], "override 'group_size=8' must look like section.key=value (e.g. rollout.group_size=8)"),
        (["rollout.group_size.x=1"], "cannot set rollout.group_size.x: group_size is a value, not a section"),
    ],
)
def test_bad_overrides_give_one_exact_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_CONFIG, overrides)
    assert str(info.value) == message


def test_bad_yaml_file_says_where(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  group_size: [1,\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections, got list"):
        load_config(listy)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "missing.yaml"], "error: config file missing.yaml not found"),
        (["rollout.grop_size=8"], "error: unknown key rollout.grop_size; did you mean rollout.group_size?"),
        (["learner.lr=fast"], "error: learner.lr: expected float, got str 'fast'"),
    ],
)
def test_cli_errors_are_one_line_on_stderr_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n"
    assert captured.out == ""


def test_cli_as_a_process_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.run", "--config", str(tmp_path / "nope.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: config file {tmp_path / 'nope.yaml'} not found"]


def test_dry_run_prints_the_resolved_config_and_checks(capsys):
    assert main(["--dry-run", "rollout.group_size=6", "sandbox.isolation=process"]) == 0
    out = capsys.readouterr().out
    assert "group_size: 6" in out
    assert "check model    ok" in out
    assert "check solver   ok" in out
    assert "check sandbox  ok   isolation=process (UNSAFE" in out


def test_dry_run_fails_on_an_unknown_solver_and_lists_the_valid_ones(capsys):
    assert main(["--dry-run", "solver.name=not_a_solver", "sandbox.isolation=process"]) == 1
    out = capsys.readouterr().out
    assert "check solver   FAIL unknown solver 'not_a_solver'; valid solvers: " in out
    assert "gurobipy" in out.split("valid solvers:")[1]


def test_dry_run_starts_the_real_jail(capsys):
    assert main(["--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("check sandbox"))
    assert line.startswith("check sandbox  ok   isolation=nsjail, preload coptpy") and line.endswith(": ran")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(DEFAULT_CONFIG, ["rollout.group_size=3", "algorithm.dual_clip=2.5"])
    write_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_defaults_live_on_the_dataclasses():
    assert load_config(None) == Config()


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "recipes").glob("[gd]*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_loads_over_its_base(recipe):
    cfg = load_config(recipe)
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.generation.backend == "sglang"
    assert cfg.solver.name in recipe.stem
    algorithm, solver = recipe.stem.split("-", 1)
    assert cfg.run.name == f"{algorithm}-{solver}-qwen2.5-7b"
    if algorithm == "dapo":
        assert (cfg.algorithm.clip_high, cfg.rollout.dynamic_sampling, cfg.algorithm.kl_coef) == (0.28, True, 0.0)
    assert cfg.sandbox.limits.wall_s == 60.0, "the base's nested sections are merged, not replaced"


def test_base_chains_merge_and_cycles_are_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("rollout:\n  group_size: 3\n  prompts_per_step: 5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrollout:\n  group_size: 7\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.rollout.group_size, cfg.rollout.prompts_per_step) == (7, 5)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml not found"):
        load_config(tmp_path / "c.yaml")


def test_reading_the_config_imports_no_torch():
    """`engine.run --help` must answer at once: the config module (and every section type it names) is torch-free."""
    code = "import sys, engine.config; print(sorted({'torch', 'transformers', 'aiohttp'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
