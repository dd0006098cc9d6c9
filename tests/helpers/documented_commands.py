"""Every shell command of the documentation, found, classified and run as written (issue #29).

Which text is a command. The documents are :data:`DOCUMENTS`. A fenced block labelled ``bash``, ``sh``, ``shell`` or
``console`` holds commands; nothing else does: unlabelled fences hold file trees, data layouts and diagrams, and
``python`` fences hold Python. So that a command cannot hide where the suite does not look, an unlabelled fence or an
indented code block whose first line starts with a command word (:data:`COMMAND_WORDS`) is an error
(:func:`hidden_commands`): label it ``bash``.

How a block splits into commands: a line ending in ``\\`` continues on the next; a line starting with ``#`` is a
comment and a `` # ...`` after a command is too (bash's rule: outside quotes, at the start of a word); blank lines
separate nothing. In a ``console`` block only lines starting with ``$ `` are commands (the prompt is dropped; their
continuation lines may start with ``> ``), the other lines are output. Each command is named ``<document>:<line>``.

What happens to a command: it is run, unless an HTML comment on the lines right above its block says otherwise::

    <!-- not-in-ci: needs the full KiTS23 download (~500 GB) -->
    <!-- covered-by: tests/bundles/test_kits23_bundle.py::test_x (why the command itself is not run) -->
    <!-- covered-by: .ci/run -->

A marker without ``[...]`` is for every command of the block that no selector marker claims; ``<!-- not-in-ci[torchrun]:
... -->`` is for the block's commands whose text contains ``torchrun``, and ``<!-- run[monai-xai datalist] -->`` runs
the commands it selects whatever the block's marker says (one marker of a kind per command, else a problem).
``not-in-ci`` needs a reason; any ``tests/...::test_name`` it names must exist. ``covered-by`` names a test that must
exist and whose source (its module and the ``tests.helpers`` modules that imports) must contain every key argument of
the command (:func:`key_arguments`: its option names, sub-command, module, config and study files and bundle), or
``.ci/run`` for ``make test`` and the ``make`` targets that only build what ``make test`` builds. Two more markers say
how to run a command: ``<!-- run-in: bundles/x -->`` (its working directory, else the repository root, as the
documents say) and ``<!-- server: http://127.0.0.1:8000/info/ -->`` (a command that stays up: it is started, must
answer 200 at that address, and is stopped once the document's later commands have run).

How a command runs (:class:`DocumentRun`): in bash, in a sandbox per document (a copy of the repository's files, so
``outputs/``, ``bundles/*/eval`` and the bundles are never the real ones), with ``.venv`` there linking to the running
virtual environment and first on ``PATH`` (the environment ``make`` builds, activated), ``HOME`` a folder of the
sandbox (``~/...`` and caches stay inside), ``OMP_NUM_THREADS=1`` (shared CI cores), the document's own shell
variables (the ``B=bundles/x``, ``D=<dataset_dir>`` its text defines just above the block) and
:data:`PLACEHOLDERS` applied. If a server's documented port is taken, a free one replaces it in every command of that
document (``127.0.0.1:<port>`` / ``localhost:<port>`` and ``--port <port>``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.servers import free_port

__all__ = [
    "COMMAND_WORDS",
    "DOCUMENTS",
    "PLACEHOLDERS",
    "PYTHON_EQUIVALENTS",
    "Command",
    "DocumentRun",
    "DocumentRuns",
    "Fixtures",
    "Marker",
    "RunResult",
    "collect_commands",
    "coverage_problems",
    "document_paths",
    "hidden_commands",
    "key_arguments",
    "make_rules",
    "make_variables",
    "missing_test",
    "parse_document",
    "shell_words",
    "strip_comment",
    "unrunnable_reason",
]

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/*.md", "configs/README.md", "bundles/*/docs/README.md")
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
COMMAND_WORDS = (
    "python", "python3", "monai-xai", "make", "monailabel", "torchrun", "curl", "cp", "pip", "mlflow", "bash", "cd",
)  # fmt: skip
# monai-xai sub-command -> the Python function a test calls instead (either name counts as the key argument)
PYTHON_EQUIVALENTS = {
    "explain": ("explain_bundle",),
    "sanity": ("bundle_sanity_checks",),
    "study": ("run_study",),
    "demo": ("run_demo",),
}
SERVER_TIMEOUT_S = 300
COMMAND_TIMEOUT_S = 600


# ---------------------------------------------------------------------------------------------------------------------
# The placeholder mapping: what each <placeholder> of a documented command stands for when the suite runs it. Keys: a
# document (repository-relative); values: {placeholder: fixture}. A fixture writes a tiny copy of what the placeholder
# names, in its published layout, with the writers of tests/helpers/, into the document's sandbox, once, and returns
# its path, which replaces the placeholder in the command (and in the document's B=/D=/M= variables). A key starting
# with "~/" is not replaced: the fixture is written at that path under the sandbox's HOME, so the command reads it as
# written.
# ---------------------------------------------------------------------------------------------------------------------


def _segmentation_bundle(fixtures: Fixtures) -> Path:
    """A bundle in model-zoo layout: 3D UNet (random weights), 2 cases 16^3 with labels (tests/helpers/bundles.py)."""
    from tests.helpers.bundles import make_segmentation_bundle

    return make_segmentation_bundle(fixtures.folder / "bundle")


def _segmentation_datalist(fixtures: Fixtures) -> Path:
    """That bundle's cases as a datalist with a ``validation`` list (image and ``label``)."""
    bundle = fixtures.get("<bundle>")
    datalist = fixtures.folder / "datalist.json"
    datalist.write_text(json.dumps({"validation": json.loads((bundle / "data" / "datalist.json").read_text())}))
    return datalist


def _brain_tumor_mri(fixtures: Fixtures) -> Path:
    from tests.helpers.public_datasets import write_brain_tumor_mri

    return write_brain_tumor_mri(fixtures.folder / "brain_tumor_mri")


def _chest_xray(fixtures: Fixtures) -> Path:
    from tests.helpers.fixture_chest_xray import write_chest_xray

    return write_chest_xray(fixtures.folder / "chest_xray_pneumonia")


def _kits23(fixtures: Fixtures) -> Path:
    """The folder holding ``dataset/case_XXXXX/`` (the documents' ``<kits23>/dataset``)."""
    from tests.helpers.fixture_kits23 import write_kits23

    return write_kits23(fixtures.folder / "kits23").parent


def _siim_pneumothorax(fixtures: Fixtures) -> Path:
    from tests.helpers.fixture_siim import write_siim_pneumothorax

    return write_siim_pneumothorax(fixtures.folder / "siim_acr_pneumothorax")


def _skin_lesions(fixtures: Fixtures) -> Path:
    """HAM10000 and ISIC 2019 in one folder: the skin bundle's README gives both data sets as ``D``."""
    from tests.helpers.fixture_skin_lesions import write_ham10000, write_isic2019

    return write_isic2019(write_ham10000(fixtures.folder / "skin_lesions"))


def _isic_masks(fixtures: Fixtures) -> Path:
    from tests.helpers.fixture_skin_lesions import ISIC_MASK_FOLDER

    return fixtures.get("<dataset_dir>") / ISIC_MASK_FOLDER


def _egd_cxr(fixtures: Fixtures) -> Path:
    """EGD-CXR with its MIMIC-CXR images under the same folder (the master sheet's ``path`` is relative to it)."""
    from tests.helpers.fixture_egd_cxr import write_egd_cxr

    if not (fixtures.folder / "egd_cxr").is_dir():
        write_egd_cxr(fixtures.folder / "egd_cxr")
    return fixtures.folder / "egd_cxr"


def _label_studies(fixtures: Fixtures) -> Path:
    """``~/studies/case_000.nii.gz``: a phantom on the demo bundles' grid (the image docs/monai_label.md asks for)."""
    from monai_xai.data import write_phantom_dataset

    phantoms = write_phantom_dataset(fixtures.folder / "phantoms", n_cases=1, seed=3, positive_fraction=1.0).parent
    studies = fixtures.home / "studies"
    studies.mkdir(parents=True)
    shutil.copy(phantoms / "images" / "case_000.nii.gz", studies / "case_000.nii.gz")
    return studies


PLACEHOLDERS: dict[str, dict[str, Callable[[Fixtures], Path]]] = {
    "README.md": {
        "<bundle>": _segmentation_bundle,
        "<datalist.json>": _segmentation_datalist,
        "<dataset_dir>": _brain_tumor_mri,
    },
    "configs/README.md": {"<bundle>": _segmentation_bundle},
    "docs/monai_label.md": {"~/studies": _label_studies},
    "bundles/brain_tumor_mri_classification/docs/README.md": {"<dataset_dir>": _brain_tumor_mri},
    "bundles/chest_xray_pneumonia_classification/docs/README.md": {"<dataset_dir>": _chest_xray},
    "bundles/gaze_saliency_cxr/docs/README.md": {
        "<physionet.org/files/egd-cxr/1.0.0>": _egd_cxr,
        "<physionet.org/files/mimic-cxr/2.0.0>": _egd_cxr,
    },
    "bundles/kits23_segmentation/docs/README.md": {"<kits23>": _kits23},
    "bundles/pneumothorax_classification/docs/README.md": {"<dataset_dir>": _siim_pneumothorax},
    "bundles/skin_lesion_classification/docs/README.md": {"<dataset_dir>": _skin_lesions, "<mask_dir>": _isic_masks},
}
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")


# ---------------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------------

MARKER_KINDS = ("not-in-ci", "covered-by", "run", "run-in", "server")
VERDICT_KINDS = ("not-in-ci", "covered-by", "run")
_MARKER = re.compile(r"^\s*<!--\s*([a-z-]+)(?:\[(.+?)\])?\s*(?::\s*(.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*)=([^`\s]+)`")
_TEST_REFERENCE = re.compile(r"tests/[\w/]+\.py::\w+(?:::\w+)?")


@dataclass(frozen=True)
class Marker:
    """An HTML comment above a shell block: ``kind`` (:data:`MARKER_KINDS`), the optional ``selector`` (a text the
    commands it is for contain), its ``text`` (reason, test reference, folder or address) and its ``line``."""

    kind: str
    selector: str | None
    text: str
    line: int


@dataclass(frozen=True)
class Command:
    """One documented command: where it is, its text as written (continuation lines kept), the document's shell
    variables above its block, what happens to it (``verdict``: None when the suite runs it), where it runs
    (``cwd``, repository-relative) and, for a server, the address that answers when it is up."""

    document: str
    line: int
    text: str
    variables: dict[str, str] = field(default_factory=dict)
    verdict: Marker | None = None
    cwd: str = "."
    server: str | None = None

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def words(self) -> list[str]:
        return shell_words(self.text)


def shell_words(text: str) -> list[str]:
    """The words of a command's text after shell quoting, without comments and line continuations."""
    return shlex.split(" ".join(strip_comment(line) for line in text.split("\\\n")))


def strip_comment(line: str) -> str:
    """``line`` without its ``#`` comment: outside quotes, at the start of a word (as bash reads it)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def _split_commands(lines: list[tuple[int, str]], console: bool) -> list[tuple[int, str]]:
    """(first line, text) of each command of a block's ``(line number, text)`` lines."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, list[str]] | None = None
    for number, raw in lines:
        text = raw
        if pending is not None:
            if console and text.startswith("> "):
                text = text[2:]
            pending[1].append(text)
            if not text.rstrip().endswith("\\"):
                commands.append((pending[0], "\n".join(pending[1])))
                pending = None
            continue
        if console:
            if not text.startswith("$ "):
                continue  # output
            text = text[2:]
        if not strip_comment(text).strip():
            continue  # blank or a comment
        if text.rstrip().endswith("\\"):
            pending = (number, [text])
        else:
            commands.append((number, text))
    if pending is not None:
        commands.append((pending[0], "\n".join(pending[1])))
    return commands


@dataclass
class _Block:
    language: str
    line: int  # the opening fence
    lines: list[tuple[int, str]]
    markers: list[Marker]
    variables: dict[str, str]
    comments: list[tuple[int, str]]  # HTML comments right above it that are no marker


def _blocks(text: str) -> tuple[list[_Block], list[tuple[int, str]]]:
    """The fenced blocks of a Markdown text and its stray markers (marker comments not right above a shell block)."""
    lines = text.splitlines()
    blocks: list[_Block] = []
    stray: list[tuple[int, str]] = []
    prose: list[str] = []  # text since the last block: the variables a block's commands use are defined there
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        indent, fence, language = opening.groups()
        fence_line = index + 1
        markers, comments = [], []
        above = index - 1
        while above >= 0 and lines[above].lstrip().startswith("<!--"):
            marker = _MARKER.match(lines[above])
            if marker and marker.group(1) in MARKER_KINDS:
                markers.insert(0, Marker(marker.group(1), marker.group(2), marker.group(3) or "", above + 1))
            else:
                comments.insert(0, (above + 1, lines[above].strip()))
            above -= 1
        body = []
        index += 1
        while index < len(lines) and not (
            lines[index].strip().startswith(fence[0] * len(fence)) and not lines[index].strip().strip(fence[0])
        ):
            line = lines[index]
            body.append((index + 1, line[len(indent) :] if line.startswith(indent) else line.lstrip()))
            index += 1
        index += 1  # the closing fence
        variables = dict(_VARIABLE.findall("\n".join(prose)))
        blocks.append(_Block(language.lower(), fence_line, body, markers, variables, comments))
        prose = []
    shell_markers = {marker.line for block in blocks if block.language in SHELL_LANGUAGES for marker in block.markers}
    for number, line in enumerate(lines, start=1):
        marker = _MARKER.match(line)
        if marker and marker.group(1) in MARKER_KINDS and number not in shell_markers:
            stray.append((number, line.strip()))
    return blocks, stray


def parse_document(document: str, text: str) -> tuple[list[Command], list[str]]:
    """The commands of a Markdown document and the problems of its markers (each a sentence naming its line).

    Args:
        document: the document's repository-relative path (the commands' ids start with it).
        text: its content.
    """
    blocks, stray = _blocks(text)
    problems = [f"{document}:{number}: marker not right above a shell block: {line}" for number, line in stray]
    commands: list[Command] = []
    for block in blocks:
        if block.language not in SHELL_LANGUAGES:
            continue
        found = _split_commands(block.lines, console=block.language == "console")
        problems += [f"{document}:{number}: not a marker (one line, kind in {MARKER_KINDS}): {line}"
                     for number, line in block.comments]  # fmt: skip
        for marker in block.markers:
            if marker.kind == "not-in-ci" and not marker.text:
                problems.append(f"{document}:{marker.line}: not-in-ci needs a reason")
            if marker.kind in ("covered-by", "run-in", "server") and not marker.text:
                problems.append(f"{document}:{marker.line}: {marker.kind} needs a value")
            if marker.selector is not None and not any(marker.selector in text for _, text in found):
                problems.append(f"{document}:{marker.line}: [{marker.selector}] matches no command of its block")
        for kind in MARKER_KINDS:
            general = [marker for marker in block.markers if marker.kind == kind and marker.selector is None]
            if len(general) > 1:
                problems.append(f"{document}:{general[1].line}: a second {kind} marker for the whole block")
        for number, command_text in found:
            chosen: dict[str, Marker | None] = {}
            for kinds in (VERDICT_KINDS, ("run-in",), ("server",)):
                claims = [m for m in block.markers if m.kind in kinds and m.selector and m.selector in command_text]
                if len(claims) > 1:
                    lines = ", ".join(str(m.line) for m in claims)
                    problems.append(f"{document}:{number}: claimed by the markers of lines {lines}")
                general = [m for m in block.markers if m.kind in kinds and m.selector is None]
                chosen[kinds[0]] = claims[0] if claims else (general[0] if general else None)
            verdict, run_in, server = chosen[VERDICT_KINDS[0]], chosen["run-in"], chosen["server"]
            commands.append(
                Command(
                    document,
                    number,
                    command_text,
                    block.variables,
                    verdict if verdict is None or verdict.kind != "run" else None,
                    run_in.text if run_in else ".",
                    server.text if server else None,
                )
            )
    return commands, problems


def hidden_commands(text: str) -> list[tuple[int, str]]:
    """(line, text) of the first line of each unlabelled fenced block or indented code block that starts with a
    command word: commands the suite would not see."""

    def is_command(line: str) -> bool:
        words = line.strip().removeprefix("$ ").split()
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]
        return bool(words) and (words[0] in COMMAND_WORDS or words[0].startswith((".venv", "./")))

    found = []
    blocks, _ = _blocks(text)
    fenced = set()
    for block in blocks:
        fenced.update(number for number, _ in block.lines)
        fenced.add(block.line)
        first = next(((number, line) for number, line in block.lines if line.strip()), None)
        if not block.language and first and is_command(first[1]):
            found.append(first)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        number = index + 1
        indented = line.startswith("    ") and line.strip()
        after_blank = index > 0 and not lines[index - 1].strip()
        if number not in fenced and indented and after_blank and is_command(line):
            found.append((number, line.strip()))
    return found


def document_paths(root: Path = REPO) -> list[str]:
    """The documents (:data:`DOCUMENTS`) under ``root``, repository-relative, in a fixed order."""
    return [str(path.relative_to(root)) for pattern in DOCUMENTS for path in sorted(root.glob(pattern))]


def collect_commands(root: Path = REPO) -> tuple[list[Command], dict[str, list[str]]]:
    """Every documented command under ``root`` and the marker problems per document."""
    commands, problems = [], {}
    for document in document_paths(root):
        found, problems[document] = parse_document(document, (root / document).read_text())
        commands += found
    return commands, problems


# ---------------------------------------------------------------------------------------------------------------------
# Key arguments and coverage
# ---------------------------------------------------------------------------------------------------------------------


def _expand(word: str, variables: dict[str, str]) -> str:
    """``$X`` / ``${X}`` of the document's variables (``$PWD`` is the working directory)."""
    values = {**variables, "PWD": "."}
    return re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?", lambda match: values.get(match.group(1), match.group(0)), word)


def _path_keys(word: str, cwd: Path) -> list[str]:
    """Key arguments of the repository paths in a word (a path, or a list of them in Python syntax): the config,
    study and script files by name, and the bundle folder a path lies in."""
    keys = []
    for candidate in re.findall(r"[\w.~/-]+", word):
        if "/" not in candidate and not candidate.endswith((".json", ".py")):
            continue
        path = (cwd / candidate).resolve()
        if not path.exists() or not path.is_relative_to(REPO):
            continue
        parts = path.relative_to(REPO).parts
        if len(parts) > 1 and parts[0] == "bundles":
            keys.append(parts[1])
        if path.suffix in (".json", ".py"):
            keys.append(path.name)
    return keys


def key_arguments(command: Command) -> list[tuple[str, ...]]:
    """What a test must contain to run ``command``: each entry is a name and its accepted alternatives.

    The option names (``--dataset_dir`` -> ``dataset_dir``; their values may differ), the positional words that are
    names (sub-command, run id, data set name; a ``monai-xai`` sub-command or its :data:`PYTHON_EQUIVALENTS`), the
    module of ``-m``, ``make``'s targets and the config, study and script files and bundle folders the command names.
    """
    words = [_expand(word, command.variables) for word in command.words]
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    cwd = REPO / command.cwd
    keys: list[tuple[str, ...]] = []
    program, rest = Path(words[0]).name, words[1:]
    if program.startswith("python") or program == "torchrun":  # the launcher's own options end at -m or a script
        script = next((i for i, word in enumerate(rest) if not word.startswith("-")), len(rest))
        if "-m" in (rest[:-1] if program == "torchrun" else rest[:script]):  # torchrun's options take values
            start = rest.index("-m")
            keys += [(word[2:].split("=", 1)[0],) for word in rest[:start] if word.startswith("--")]
            keys.append((rest[start + 1],))
            rest = rest[start + 2 :]
        else:
            keys += [(key,) for key in _path_keys(" ".join(rest[script : script + 1]), cwd)]
            rest = rest[script + 1 :]
    index = 0
    while index < len(rest):
        word = rest[index]
        takes_value = index + 1 < len(rest) and not rest[index + 1].startswith("-")
        if word.startswith("--"):
            name = word[2:].split("=", 1)[0]
            keys.append((name,))
            if "=" in word:
                keys += [(key,) for key in _path_keys(word.split("=", 1)[1], cwd)]
            elif takes_value:
                keys += [(key,) for key in _path_keys(rest[index + 1], cwd)]
                index += 1
        elif word.startswith("-"):
            if takes_value:
                keys += [(key,) for key in _path_keys(rest[index + 1], cwd)]
                index += 1
        elif re.fullmatch(r"[A-Za-z_]\w*", word):
            equivalents = PYTHON_EQUIVALENTS.get(word, ()) if program == "monai-xai" else ()
            keys.append((word, *equivalents))
        else:
            keys += [(key,) for key in _path_keys(word, cwd)]
        index += 1
    return list(dict.fromkeys(keys))


def _test_sources(test_file: Path, root: Path) -> str:
    """The test module's text and that of the ``tests.helpers`` modules it imports (transitively)."""
    texts, seen, pending = [], set(), [test_file]
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        text = path.read_text()
        texts.append(text)
        for module in re.findall(r"^\s*(?:from|import)\s+(tests\.helpers\.\w+)", text, flags=re.M):
            pending.append(root / (module.replace(".", "/") + ".py"))
    return "\n".join(texts)


def missing_test(reference: str, root: Path = REPO) -> str | None:
    """Why ``tests/x.py::test_name`` (or ``::Class::test_name``) names no test under ``root``, or None."""
    path, _, name = reference.partition("::")
    test_file = root / path
    if not test_file.is_file():
        return f"{path} does not exist"
    names = {
        node.name
        for node in ast.walk(ast.parse(test_file.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    missing = [part for part in name.split("::") if part not in names]
    return f"{path} has no {missing[0]}" if missing else None


def make_rules(makefile: str) -> dict[str, tuple[list[str], list[str]]]:
    """``{target: (prerequisites, recipe lines)}`` of a Makefile's rules (variables left as written)."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    target = None
    for line in makefile.splitlines():
        rule = re.match(r"^([\w.-]+)\s*:(?![=:])[ \t]*(.*)$", line)
        if rule:
            target = rule.group(1)
            rules[target] = (rule.group(2).split(), [])
        elif line.startswith("\t") and target is not None:
            rules[target][1].append(line.strip())
        elif line.strip() and not line.startswith("#"):
            target = None
    return rules


def make_variables(makefile: str, text: str) -> str:
    """``text`` with the Makefile's ``$(NAME)`` variables expanded (``=``, ``:=`` and ``?=`` assignments)."""
    values = dict(re.findall(r"^(\w+)\s*[?:]?=\s*(.*?)\s*$", makefile, flags=re.M))
    while (found := re.search(r"\$\((\w+)\)", text)) and found.group(1) in values:
        text = text.replace(found.group(0), values[found.group(1)])
    return text


def coverage_problems(command: Command, root: Path = REPO) -> list[str]:
    """Why ``command``'s marker does not hold: a missing test, a key argument its test does not contain, a
    ``make`` target CI does not reach; empty when it holds."""
    marker = command.verdict
    if marker is None:
        return []
    if marker.kind == "not-in-ci":
        problems = [] if marker.text else ["not-in-ci without a reason"]
        for reference in _TEST_REFERENCE.findall(marker.text):
            problems += [missing for missing in [missing_test(reference, root)] if missing]
        return problems
    reference = marker.text.split()[0] if marker.text else ""
    if reference == ".ci/run":
        return _ci_problems(command, root)
    if not _TEST_REFERENCE.fullmatch(reference):
        return [f"covered-by names {reference!r}: give tests/<file>.py::<test> or .ci/run"]
    missing = missing_test(reference, root)
    if missing:
        return [missing]
    source = _test_sources(root / reference.split("::")[0], root)
    absent = [
        "/".join(alternatives)
        for alternatives in key_arguments(command)
        if not any(re.search(rf"(?<!\w){re.escape(key)}(?!\w)", source) for key in alternatives)
    ]
    return [f"{reference} (with its helpers) never mentions {absent}"] if absent else []


def _ci_problems(command: Command, root: Path) -> list[str]:
    """``covered-by: .ci/run``: CI runs ``make test``; the command is ``make test``, or a ``make`` target that only
    builds prerequisites (no recipe of its own) which ``make test`` builds too."""
    if not re.search(r"^make test$", (root / ".ci" / "run").read_text(), flags=re.M):
        return [".ci/run does not run make test"]
    words = command.words
    if words[:1] != ["make"] or len(words) != 2:
        return [".ci/run covers only `make <target>` commands"]
    rules = make_rules((root / "Makefile").read_text())
    target = words[1]
    if target == "test":
        return []
    prerequisites, recipe = rules.get(target, ([], []))
    if prerequisites and not recipe and set(prerequisites) <= set(rules["test"][0]):
        return []
    return [f"make test does not do what make {target} does (prerequisites {prerequisites}, recipe {recipe})"]


# ---------------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------------


class Fixtures:
    """The placeholder fixtures of one document's sandbox, written on first use."""

    def __init__(self, document: str, folder: Path, home: Path) -> None:
        self.document, self.folder, self.home = document, folder, home
        self._paths: dict[str, Path] = {}

    def get(self, placeholder: str) -> Path:
        if placeholder not in self._paths:
            writer = PLACEHOLDERS.get(self.document, {}).get(placeholder)
            if writer is None:
                raise KeyError(_no_fixture(self.document, placeholder))
            path = writer(self).resolve()
            if not re.fullmatch(r"[\w./-]+", str(path)):
                raise ValueError(f"fixture path {path} would need shell quoting inside the command")
            self._paths[placeholder] = path
        return self._paths[placeholder]


def _no_fixture(document: str, placeholder: str) -> str:
    return (
        f"{placeholder} has no fixture in PLACEHOLDERS[{document!r}] (tests/helpers/documented_commands.py): "
        "add one, or mark the command not-in-ci / covered-by"
    )


def unrunnable_reason(command: Command) -> str | None:
    """Why the suite cannot run an unmarked ``command`` (a placeholder without a fixture), or None."""
    used = " ".join([command.text, *command.variables.values()])
    mapped = PLACEHOLDERS.get(command.document, {})
    for placeholder in PLACEHOLDER.findall(used):
        if placeholder not in mapped:
            return _no_fixture(command.document, placeholder)
    return None


@dataclass
class RunResult:
    """What running one command gave: exit status (0 for a server that answered), its output, where it ran, and for
    a server the body of its answer."""

    command: Command
    returncode: int
    output: str
    sandbox: Path
    home: Path
    text: str  # as run: placeholders replaced
    answer: str | None = None

    def tail(self, characters: int = 4000) -> str:
        return f"$ {self.text}\n(exit {self.returncode})\n{self.output[-characters:]}"


def _copy_repository(destination: Path) -> None:
    """The repository's files (tracked and untracked, not ignored: no .venv, outputs/ or eval/) to ``destination``."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what .gitignore would leave out
        ignored = shutil.ignore_patterns(".git", ".venv*", "outputs", "eval", "__pycache__", "*.egg-info", ".*_cache")
        shutil.copytree(REPO, destination, symlinks=True, ignore=ignored, dirs_exist_ok=True)
        return
    for relative in filter(None, listed):
        source, target = REPO / relative, destination / relative
        if not source.is_symlink() and not source.is_file():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answer(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode(errors="replace") if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


class DocumentRun:
    """Runs one document's unmarked commands in order, in its own sandbox under ``root``.

    Args:
        document: repository-relative path (its placeholders come from :data:`PLACEHOLDERS`).
        commands: the commands to run, in document order.
        root: a fresh folder for the sandbox.
    """

    def __init__(self, document: str, commands: Iterable[Command], root: Path) -> None:
        self.document = document
        self.commands = list(commands)
        self.sandbox = root / "repository"
        self.home = root / "home"
        self.fixtures = Fixtures(document, root / "fixtures", self.home)
        self.results: dict[str, RunResult] = {}
        self._port_changes: dict[str, str] = {}

    def environment(self, command: Command) -> dict[str, str]:
        import matplotlib

        bin_dir = self.sandbox / ".venv" / "bin"
        variables = {name: self._substitute(value) for name, value in command.variables.items()}
        return {
            **os.environ,
            "HOME": str(self.home),
            "VIRTUAL_ENV": str(self.sandbox / ".venv"),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(self.sandbox),
            "OMP_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", matplotlib.get_cachedir()),  # its font cache, built once
            **variables,
        }

    def _substitute(self, text: str) -> str:
        for placeholder in PLACEHOLDER.findall(text):
            text = text.replace(placeholder, str(self.fixtures.get(placeholder)))
        for written, free in self._port_changes.items():
            text = re.sub(rf"((?:127\.0\.0\.1|localhost):|--port\s+){written}\b", rf"\g<1>{free}", text)
        return text

    def _prepare(self) -> None:
        _copy_repository(self.sandbox)
        (self.sandbox / ".venv").symlink_to(sys.prefix, target_is_directory=True)
        self.home.mkdir(parents=True)
        for placeholder in PLACEHOLDERS.get(self.document, {}):
            if placeholder.startswith("~/"):
                self.fixtures.get(placeholder)
        for command in self.commands:
            port = re.search(r":(\d+)", command.server or "")
            if port and _port_in_use(int(port.group(1))):
                self._port_changes[port.group(1)] = str(free_port())

    def run(self) -> dict[str, RunResult]:
        """Every command's result by id; a server stays up until the document's last command has run."""
        self._prepare()
        servers: list[tuple[subprocess.Popen, RunResult]] = []
        try:
            for command in self.commands:
                try:
                    text = self._substitute(command.text)
                    environment = self.environment(command)
                except (KeyError, ValueError) as error:
                    self.results[command.id] = RunResult(command, -1, str(error), self.sandbox, self.home, command.text)
                    continue
                cwd = self.sandbox / command.cwd
                if command.server:
                    servers.append(self._start_server(command, text, environment, cwd))
                    self.results[command.id] = servers[-1][1]
                else:
                    self.results[command.id] = self._run(command, text, environment, cwd)
        finally:
            for process, result in servers:
                if process.poll() is not None and result.returncode == 0:
                    result.returncode = process.returncode or 1  # it did not stay up
                _stop(process)
                result.output = result.output + self._log(result).read_text(errors="replace")
        return self.results

    def _log(self, result: RunResult) -> Path:
        return self.sandbox.parent / f"line{result.command.line}.log"

    def _run(self, command: Command, text: str, environment: dict[str, str], cwd: Path) -> RunResult:
        try:
            finished = subprocess.run(
                ["bash", "-c", text],
                cwd=cwd,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            returncode, output = finished.returncode, finished.stdout
        except subprocess.TimeoutExpired as expired:
            returncode, output = -1, f"timed out after {COMMAND_TIMEOUT_S} s\n{expired.output or ''}"
        return RunResult(command, returncode, output, self.sandbox, self.home, text)

    def _start_server(
        self, command: Command, text: str, environment: dict[str, str], cwd: Path
    ) -> tuple[subprocess.Popen, RunResult]:
        url = self._substitute(command.server or "")
        result = RunResult(command, 0, "", self.sandbox, self.home, text)
        with open(self._log(result), "w") as log:
            process = subprocess.Popen(
                ["bash", "-c", text], cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the launcher's children stop with it
            )  # fmt: skip
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while (answer := _answer(url)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                result.returncode = process.returncode if process.poll() is not None else -1
                result.output = f"{url} did not answer 200 within {SERVER_TIMEOUT_S} s\n"
                return process, result
            time.sleep(1)
        result.answer = answer
        return process, result


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's process group (it was started in its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


class DocumentRuns:
    """The runs of several documents, started together on a few threads (each run is mostly a subprocess); a
    result waits for its document only."""

    def __init__(self, jobs: dict[str, Callable[[], dict[str, RunResult]]], workers: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="documented-commands")
        self._futures = {name: self._executor.submit(job) for name, job in jobs.items()}

    def results(self, name: str) -> dict[str, RunResult]:
        return self._futures[name].result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
