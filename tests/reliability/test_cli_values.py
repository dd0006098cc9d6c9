"""Command-line values read strictly: ``--xai_overwrite false`` used to be the string "false", which Python takes as
true, so it deleted the earlier run it was meant to protect (issue #29, 4); fuzzed values are either read as their
type or refused with a message naming the flag."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_xai.bundle import explain_config_files
from monai_xai.cli import _typed_overrides, strict_value, typed_command
from tests.helpers.bundles import make_classification_bundle

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "monai-xai"


@pytest.mark.parametrize(
    "value, expected",
    [("false", False), ("False", False), ("no", False), ("0", False), (0, False), (False, False),
     ("true", True), ("TRUE", True), ("yes", True), ("1", True), (1, True), (True, True)],
)  # fmt: skip
def test_booleans(value, expected):
    assert strict_value(value, bool, "xai_overwrite") is expected


@pytest.mark.parametrize("value", ["maybe", "", "flase", 2, -1, None, 0.5, [True]])
def test_anything_else_is_not_a_boolean(value):
    with pytest.raises(ValueError, match=r"--xai_overwrite takes true or false, got"):
        strict_value(value, bool, "xai_overwrite")


def test_numbers():
    assert strict_value("12", int, "n_cases") == 12 and strict_value(7, int, "n_cases") == 7
    assert strict_value("0.25", float, "min_heat") == 0.25 and strict_value(1, float, "min_heat") == 1.0
    for value in ("1.5", "ten", True, None, "¹", "٣"):  # superscripts and other scripts' digits are not whole numbers
        with pytest.raises(ValueError, match="--n_cases takes a whole number"):
            strict_value(value, int, "n_cases")
    for value in ("nan", "inf", "x", True):
        with pytest.raises(ValueError, match="--min_heat takes a finite number"):
            strict_value(value, float, "min_heat")


def test_config_ids_are_read_as_their_defaults_type():
    bundle = REPO / "bundles" / "lesion_classification_3d"
    typed = _typed_overrides(str(bundle), ("explain", "xai_metrics"), {
        "xai_overwrite": "false", "xai_strict": "true", "xai_report": "False", "xai_output_dir": "false",
        "xai_methods": ["gradcam"],
    })  # fmt: skip
    assert typed["xai_overwrite"] is False and typed["xai_strict"] is True and typed["xai_report"] is False
    assert typed["xai_output_dir"] == "false" and typed["xai_methods"] == ["gradcam"]  # a path stays a string
    with pytest.raises(ValueError, match="--xai_overwrite takes true or false, got 'maybe'"):
        _typed_overrides(str(bundle), ("explain",), {"xai_overwrite": "maybe"})


def test_typed_commands_read_their_annotated_arguments():
    def command(n_cases: int = 1, overwrite: bool = False, name: str | None = None, ratio: float | None = None):
        return n_cases, overwrite, name, ratio

    assert typed_command(command)("3", "false", "7", "0.5") == (3, False, "7", 0.5)
    with pytest.raises(ValueError, match="--overwrite takes true or false"):
        typed_command(command)(overwrite="sure")


@pytest.mark.slow
def test_xai_overwrite_false_keeps_the_earlier_run(tmp_path):
    """The exact command of the issue: the second run is refused and the first run's results stay."""
    bundle = make_classification_bundle(tmp_path / "bundle")
    out = tmp_path / "xai"
    command = [str(SCRIPT), "explain", str(bundle), "--overlays", "['explain']", "--xai_methods", "['gradcam']",
               "--xai_target_layer", "features.denseblock2", "--xai_output_dir", str(out)]  # fmt: skip

    def run(*flags: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=600, env=env)

    first = run("--xai_report", "false")
    assert first.returncode == 0, first.stderr[-3000:]
    cases = (out / "cases.csv").read_text()
    assert not list(out.rglob("*_report.html"))  # --xai_report false was read as false
    second = run("--xai_overwrite", "false")
    assert second.returncode != 0 and "xai_overwrite" in second.stderr
    assert (out / "cases.csv").read_text() == cases
    third = run("--xai_overwrite", "maybe")
    assert third.returncode != 0 and "--xai_overwrite takes true or false, got 'maybe'" in third.stderr
    # a mistyped id is refused with the ids meant, not run with the defaults
    fourth = run("--xai_overwrite", "true", "--xai_metods", "['hirescam']")
    assert fourth.returncode != 0 and "unknown config id(s) 'xai_metods' (did you mean xai_methods" in fourth.stderr
    assert (out / "cases.csv").read_text() == cases


def _boolean_uses(config: Path) -> list[tuple[str, str]]:
    """``(id, expression)`` for each ``$`` expression or reference of ``config`` that uses one of its own boolean ids
    other than through ``strict_value(@id, bool, 'id')``."""
    content = json.loads(config.read_text())
    if not isinstance(content, dict):
        return []
    booleans = [name for name, value in content.items() if isinstance(value, bool)]
    values = re.findall(r'"((?:\$|@)[^"]*)"', config.read_text())
    return [
        (name, value)
        for name in booleans
        for value in values
        if re.search(rf"@{name}\b", value)
        and re.sub(rf"strict_value\(@{name}, bool, '{name}'\)", "", value).count(f"@{name}") > 0
        and value.startswith("$")
    ]


@pytest.mark.parametrize(
    "config",
    sorted([*REPO.glob("bundles/*/configs/*.json"), *REPO.glob("monai_xai/configs/*.json")]),
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_expressions_read_boolean_ids_strictly(config):
    """Every expression of a bundle config or overlay that uses one of its boolean ids reads it with strict_value: a
    command-line `--<id> false` is the string "false", which an expression such as `$not @xai_report` takes as true."""
    assert not _boolean_uses(config)


@pytest.mark.slow
def test_bundle_run_reads_the_overlay_booleans_strictly(tmp_path):
    """`python -m monai.bundle run` hands `--xai_report false` to the overlay as the string "false" (python-fire), which
    its expressions took as true: the reports were written and `--xai_overwrite false` deleted the earlier run. The
    overlay now reads its booleans with strict_value, as `monai-xai explain` does."""
    bundle = make_classification_bundle(tmp_path / "bundle")
    out = tmp_path / "xai"
    files = json.dumps([str(path) for path in explain_config_files(bundle, ("explain",))])
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle),
               "--xai_methods", "['gradcam']", "--xai_target_layer", "features.denseblock2",
               "--xai_output_dir", str(out)]  # fmt: skip

    def run(*flags: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=600, env=env)

    first = run("--xai_report", "false", "--xai_strict", "false", "--xai_dicom_output", "false")
    assert first.returncode == 0, first.stderr[-3000:]
    cases = (out / "cases.csv").read_text()
    assert not list(out.rglob("*_report.html")) and not list(out.rglob("dicom"))
    second = run("--xai_overwrite", "false")
    assert second.returncode != 0 and "holds the results of an earlier run" in second.stderr
    assert (out / "cases.csv").read_text() == cases
    third = run("--xai_overwrite", "true", "--xai_report", "maybe")
    assert third.returncode != 0 and "--xai_report takes true or false, got 'maybe'" in third.stderr


@FUZZ
@given(value=st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans(), st.none()))
def test_fuzzed_values_are_read_or_refused_by_name(value):
    for kind in (bool, int, float):
        try:
            read = strict_value(value, kind, "flag")
        except ValueError as error:
            assert str(error).startswith("--flag takes")
            continue
        assert type(read) is kind
