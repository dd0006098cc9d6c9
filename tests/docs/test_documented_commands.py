"""Every shell command of the documentation runs in the suite as written, or a marker above it says which test covers
it or why it cannot run in CI (issue #29). The rules, the markers and the one placeholder mapping are in
:mod:`tests.helpers.documented_commands`; ``docs/reliability.md`` sums them up.

Each command is one test, named ``<document>:<line>``. The commands the suite runs run in bash, each document in its
own sandbox (a copy of the repository), two documents at a time, started when the first of them is asked for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers.documented_commands import (
    REPO,
    Command,
    DocumentRun,
    DocumentRuns,
    RunResult,
    collect_commands,
    coverage_problems,
    document_paths,
    hidden_commands,
    key_arguments,
    make_rules,
    make_variables,
    parse_document,
    shell_words,
    unrunnable_reason,
)

COMMANDS, MARKER_PROBLEMS = collect_commands()
DEMO = "Makefile: demo on 2 cases"
# the longest runs first, so that the two workers finish together
RUN_ORDER = ("docs/monai_label.md", DEMO, "README.md", "bundles/skin_lesion_classification/docs/README.md")
DEMO_OPTIONS = """--cases 2 --methods "['gradcam']\""""


def _option(words: list[str], name: str) -> str:
    return words[words.index(f"--{name}") + 1]


def _demo_command() -> Command:
    """``make demo``'s recipe, its variables expanded, on fewer cases and methods."""
    makefile = (REPO / "Makefile").read_text()
    (recipe,) = make_rules(makefile)["demo"][1]
    line = makefile.splitlines().index(f"\t{recipe}") + 1
    return Command("Makefile", line, f"{make_variables(makefile, recipe)} {DEMO_OPTIONS}")


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The runs of the documents whose commands this session selected (and of the demo when selected)."""
    selected = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    documents = {
        item.callspec.params["command"].document
        for item in selected
        if "command" in getattr(getattr(item, "callspec", None), "params", {})
        and item.callspec.params["command"].verdict is None
    }
    if any(item.name == test_make_demo_runs_its_recipe_on_two_cases.__name__ for item in selected):
        documents.add(DEMO)
    names = sorted(documents, key=lambda name: (RUN_ORDER.index(name) if name in RUN_ORDER else len(RUN_ORDER), name))

    def job(name: str):
        folder = tmp_path_factory.mktemp(re.sub(r"\W+", "_", name))
        commands = [_demo_command()] if name == DEMO else [c for c in COMMANDS if c.document == name and not c.verdict]
        return DocumentRun(name, commands, folder).run

    documents_run = DocumentRuns({name: job(name) for name in names})
    yield documents_run
    documents_run.close()


# ---------------------------------------------------------------------------------------------------------------------
# What each run command must have done, besides exiting 0 (a command's text selects its check)
# ---------------------------------------------------------------------------------------------------------------------


def _check_datalist(result: RunResult) -> None:
    words = shell_words(result.text)
    datalist = json.loads((result.sandbox / result.command.cwd / words[4]).read_text())
    assert {"training", "validation", "test"} <= set(datalist), datalist.keys()
    assert all(datalist[name] for name in ("training", "validation", "test")), "an empty list"
    for entry in (entry for entries in datalist.values() for entry in entries):
        for key in ("image", "mask"):
            assert key not in entry or Path(entry[key]).is_file(), entry
    if "--mask_dir" in words:
        assert all("mask" in entry for entries in datalist.values() for entry in entries)


def _check_explained(result: RunResult) -> None:
    words = shell_words(result.text)
    summary = result.sandbox / _option(words, "bundle_root") / "eval" / "xai" / "summary.csv"
    methods = re.findall(r"\w+", _option(words, "xai_methods"))
    assert all(f",{method}," in summary.read_text() for method in methods), summary.read_text()


def _check_sanity(result: RunResult) -> None:
    words = shell_words(result.text)
    for method in re.findall(r"\w+", _option(words, "methods")):
        assert f"| {method} |" in result.output
    if "--figure" in words:
        assert (result.sandbox / _option(words, "figure")).stat().st_size > 0
    if "--checks" in words:  # the further checks' table, with the controls' rows
        assert "| control_sobel (control: must fail) |" in result.output
    if "--verdicts_file" in words:  # each checked method's verdicts, the controls left out
        verdicts = json.loads((result.sandbox / _option(words, "verdicts_file")).read_text())
        assert set(verdicts) == set(re.findall(r"\w+", _option(words, "methods"))), verdicts
    if "--tracking_uri" in words:
        database = _option(words, "tracking_uri").removeprefix("sqlite:///")
        assert (result.sandbox / database).stat().st_size > 0 and "Tracked in MLflow at" in result.output


def _check_sanity_notes(result: RunResult) -> None:
    """A run given ``--xai_sanity``: every method's descriptions name the randomisation checks of the verdicts."""
    words = shell_words(result.text)
    verdicts = json.loads((result.sandbox / _option(words, "xai_sanity")).read_text())
    descriptions = (result.sandbox / _option(words, "xai_output_dir") / "descriptions.csv").read_text()
    for method in verdicts:
        assert re.search(rf"the {method} map (passed|failed) the randomisation check", descriptions, re.I), method


def _check_label_server(result: RunResult) -> None:
    """Every bundle of ``--conf bundles $PWD/bundles`` with weights is served (and explained); every other folder is
    skipped with a logged reason."""
    bundles = sorted(path for path in (result.sandbox / "bundles").iterdir() if path.is_dir())
    servable = [
        path.name
        for path in bundles
        if (path / "configs" / "inference.json").is_file() and (path / "models" / "model.pt").is_file()
    ]
    assert len(servable) >= 2 and len(servable) < len(bundles)  # both kinds of folder are there
    models = set(json.loads(result.answer or "{}")["models"])
    assert models == {name for bundle in servable for name in (bundle, f"{bundle}_explain")}
    for path in bundles:
        if path.name not in servable:
            assert re.search(rf"skip \S*/{path.name}: \w", result.output), f"no logged reason for {path.name}"


def _check_app_copied(result: RunResult) -> None:
    assert (result.home / "xai_app" / "main.py").is_file()


def _check_heatmap(result: RunResult) -> None:
    heatmap = nib.load(result.sandbox / result.command.cwd / shell_words(result.text)[-1])
    image = nib.load(result.home / "studies" / "case_000.nii.gz")
    values = np.asarray(heatmap.dataobj)
    assert heatmap.shape == image.shape and np.allclose(heatmap.affine, image.affine, atol=1e-4)
    assert values.min() >= 0.0 and 0.0 < values.max() <= 1.0 + 1e-6


CHECKS = (
    ("monai-xai datalist", _check_datalist),
    ("configs/explain.json", _check_explained),
    ("monai-xai sanity", _check_sanity),
    ("--xai_sanity", _check_sanity_notes),
    ("start_server", _check_label_server),
    ("cp -r monai_xai/label/sample_app", _check_app_copied),
    ("curl -X POST", _check_heatmap),
)


# ---------------------------------------------------------------------------------------------------------------------
# The documents
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", document_paths())
def test_markers_are_well_formed(document: str) -> None:
    assert not MARKER_PROBLEMS[document], "\n".join(MARKER_PROBLEMS[document])


@pytest.mark.parametrize("document", document_paths())
def test_no_command_hides_outside_a_shell_block(document: str) -> None:
    hidden = hidden_commands((REPO / document).read_text())
    assert not hidden, f"commands in unlabelled or indented blocks (label them ```bash): {hidden}"


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.verdict is None else []) for c in COMMANDS],
)
def test_documented_command(command: Command, request: pytest.FixtureRequest) -> None:
    if command.verdict is not None:
        problems = coverage_problems(command)
        assert not problems, f"{command.id}: {command.verdict.kind} {command.verdict.text}\n" + "\n".join(problems)
        return
    reason = unrunnable_reason(command)
    assert reason is None, f"{command.id} has no marker, so the suite runs it, but {reason}"
    result = request.getfixturevalue("runs").results(command.document)[command.id]
    assert result.returncode == 0, result.tail()
    for selector, check in CHECKS:
        if selector in command.text:
            check(result)


@pytest.mark.slow
def test_make_demo_runs_its_recipe_on_two_cases(runs: DocumentRuns) -> None:
    """``make demo`` is ``$(BIN)/monai-xai demo`` after the install: that recipe, on 2 phantoms with one method."""
    from monai_xai.demo import DEMO_BUNDLES

    command = _demo_command()
    assert command.text == f".venv/bin/monai-xai demo {DEMO_OPTIONS}"
    result = runs.results(DEMO)[command.id]
    assert result.returncode == 0, result.tail()
    for bundle in DEMO_BUNDLES:
        folder = result.sandbox / "outputs" / "demo" / bundle
        assert all((folder / name).is_file() for name in ("index.html", "summary.md", "sanity.md")), folder
    assert result.output.count("Localise the lesion") == len(DEMO_BUNDLES) and "| gradcam |" in result.output


def test_ci_runs_make_test() -> None:
    """README's ``make test`` is what CI runs (``covered-by: .ci/run``), and make test lints and runs the suite."""
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), flags=re.M)
    assert make_rules((REPO / "Makefile").read_text())["test"][1] == ["$(BIN)/ruff check .", "$(BIN)/python -m pytest"]


# ---------------------------------------------------------------------------------------------------------------------
# The rules, on synthetic documents: each can fail
# ---------------------------------------------------------------------------------------------------------------------

SYNTHETIC = """# Title

Prose with `B=bundles/lesion_classification_3d` and `D=<dataset_dir>`:

<!-- covered-by: tests/test_fake.py::test_covers (why) -->
<!-- not-in-ci[torchrun]: needs two GPUs -->
<!-- run[monai-xai datalist] -->
```bash
# a comment line
python -m monai.bundle run --config_file $B/configs/train.json \\
    --bundle_root $B   # trailing comment

torchrun --nproc_per_node 2 -m monai_xai.study x.json
monai-xai datalist kits23 $D out.json
```

```console
$ make demo
demo output line
$ monai-xai explain bundles/nowhere \\
> --xai_class 1
```

```python
print("not a command")
```

<!-- run-in: bundles/x -->
<!-- server: http://127.0.0.1:8000/info/ -->
```sh
monailabel start_server --port 8000
```
"""


def test_blocks_split_into_commands_with_their_markers() -> None:
    commands, problems = parse_document("doc.md", SYNTHETIC)
    assert problems == []
    assert [(c.line, c.verdict.kind if c.verdict else "run") for c in commands] == [
        (10, "covered-by"), (13, "not-in-ci"), (14, "run"), (18, "run"), (20, "run"), (31, "run"),
    ]  # fmt: skip
    train, torchrun, datalist, demo, explain, server = commands
    assert train.id == "doc.md:10" and train.text.endswith("--bundle_root $B   # trailing comment")
    assert train.words == ["python", "-m", "monai.bundle", "run", "--config_file", "$B/configs/train.json",
                           "--bundle_root", "$B"]  # fmt: skip
    assert train.variables == {"B": "bundles/lesion_classification_3d", "D": "<dataset_dir>"}
    assert torchrun.verdict.text == "needs two GPUs"
    assert (demo.text, explain.text) == ("make demo", "monai-xai explain bundles/nowhere \\\n--xai_class 1")
    assert (server.cwd, server.server) == ("bundles/x", "http://127.0.0.1:8000/info/")
    assert key_arguments(train) == [
        ("monai.bundle",), ("run",), ("config_file",), ("lesion_classification_3d",), ("train.json",),
        ("bundle_root",),
    ]  # fmt: skip
    assert key_arguments(explain) == [("explain", "explain_bundle"), ("xai_class",)]


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("<!-- not-in-ci: -->\n```bash\nmake demo\n```\n", "not-in-ci needs a reason"),
        ("<!-- covered-by[torchrun]: tests/a.py::test_b -->\n```bash\nmake demo\n```\n", "matches no command"),
        (
            "<!-- not-in-ci[make]: x -->\n<!-- covered-by[demo]: tests/a.py::test_b -->\n```bash\nmake demo\n```\n",
            "claimed by the markers of lines 1, 2",
        ),
        ("<!-- not-in-ci: x -->\n<!-- not-in-ci: y -->\n```bash\nmake demo\n```\n", "a second not-in-ci marker"),
        ("<!-- not-in-ci: far away -->\n\n```bash\nmake demo\n```\n", "not right above a shell block"),
        ("<!-- not in ci: misspelt -->\n```bash\nmake demo\n```\n", "not a marker"),
    ],
)
def test_bad_markers_are_problems(markdown: str, problem: str) -> None:
    _, problems = parse_document("doc.md", markdown)
    assert any(problem in found for found in problems), problems


def test_commands_hiding_in_other_blocks_are_found() -> None:
    markdown = (
        "Layout:\n\n```\n<dataset_dir>/case_00000/imaging.nii.gz\n```\n\n```\nmonai-xai demo\n```\n\n"
        "Train:\n\n    OMP_NUM_THREADS=1 python -m monai_xai.sanity b\n\nCode:\n\n    def f(): pass\n"
    )
    assert hidden_commands(markdown) == [(8, "monai-xai demo"), (13, "OMP_NUM_THREADS=1 python -m monai_xai.sanity b")]


def test_coverage_needs_the_test_and_every_key_argument(tmp_path: Path) -> None:
    (tmp_path / "tests" / "helpers").mkdir(parents=True)
    (tmp_path / "tests" / "helpers" / "runner.py").write_text("def go(**kw):\n    return kw['bundle_root']\n")
    (tmp_path / "tests" / "test_fake.py").write_text(
        "from tests.helpers.runner import go\n\ndef test_covers():\n    go(config_file='train.json', bundle_root='x')\n"
    )
    covered = "python -m monai.bundle run --config_file {}/configs/train.json --bundle_root x{}"
    bundle = "bundles/lesion_classification_3d"

    def problems(marker: str, extra: str = "") -> list[str]:
        markdown = f"<!-- {marker} -->\n```bash\n{covered.format(bundle, extra)}\n```\n"
        return coverage_problems(parse_document("doc.md", markdown)[0][0], root=tmp_path)

    # the test file names neither monai.bundle, run nor the bundle: the module's key arguments are missing
    (missing,) = problems("covered-by: tests/test_fake.py::test_covers")
    assert "never mentions ['monai.bundle', 'run', 'lesion_classification_3d']" in missing
    (tmp_path / "tests" / "test_fake.py").write_text(
        (tmp_path / "tests" / "test_fake.py").read_text() + "# monai.bundle run lesion_classification_3d\n"
    )
    assert problems("covered-by: tests/test_fake.py::test_covers") == []
    assert "['dataset_dir']" in problems("covered-by: tests/test_fake.py::test_covers", " --dataset_dir d")[0]
    assert problems("covered-by: tests/test_fake.py::test_gone") == ["tests/test_fake.py has no test_gone"]
    assert problems("covered-by: tests/nowhere.py::test_x") == ["tests/nowhere.py does not exist"]
    assert "give tests/<file>.py::<test>" in problems("covered-by: a test somewhere")[0]
    assert problems("not-in-ci: hours; see tests/test_fake.py::test_covers") == []
    assert problems("not-in-ci: hours; see tests/test_fake.py::test_gone") == ["tests/test_fake.py has no test_gone"]


@pytest.mark.parametrize(("target", "covered"), [("test", True), ("deploy-env", True), ("install", True),
                                                 ("demo", False), ("clean", False), ("lint", False)])  # fmt: skip
def test_ci_covers_make_test_and_what_it_builds(target: str, covered: bool) -> None:
    (command,), _ = parse_document("doc.md", f"<!-- covered-by: .ci/run -->\n```bash\nmake {target}\n```\n")
    assert (coverage_problems(command) == []) is covered


def test_an_unmarked_command_needs_a_fixture_for_each_placeholder() -> None:
    (mapped, unmapped), _ = parse_document(
        "README.md",
        "```bash\nmonai-xai datalist brain_tumor_mri <dataset_dir> o.json\nmonai-xai sanity <nowhere>\n```\n",
    )
    assert unrunnable_reason(mapped) is None
    assert "<nowhere> has no fixture in PLACEHOLDERS['README.md']" in unrunnable_reason(unmapped)
    (elsewhere,), _ = parse_document("docs/new.md", "```bash\nmonai-xai datalist x <dataset_dir> o.json\n```\n")
    assert "PLACEHOLDERS['docs/new.md']" in unrunnable_reason(elsewhere)


def test_a_taken_port_is_replaced_in_every_command_of_the_document(tmp_path: Path) -> None:
    run = DocumentRun("docs/x.md", [], tmp_path)
    run._port_changes = {"8000": "43210"}
    assert run._substitute('curl "http://127.0.0.1:8000/info/" --port 8000 -o x80001') == (
        'curl "http://127.0.0.1:43210/info/" --port 43210 -o x80001'
    )
