"""What the randomisation checks said of each method for one model, as the descriptions' trust note reads it.

``monai-xai sanity --verdicts_file sanity.json`` writes ``{method: {check: passed}}`` (the checks of
:class:`~monai_xai.enums.SanityCheck` that discriminate for the bundle); a bundle's ``xai_sanity`` takes that file's
path, the same mapping, or the older ``{method: passed}`` form, which means the top-down check alone. The file comes
from outside the run, so it is read strictly: bounded in size, JSON only, every check named and every verdict a
boolean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from monai_xai.enums import SanityCheck, as_choice

__all__ = ["MAX_VERDICTS_BYTES", "SanityVerdicts", "read_sanity_verdicts"]

# {method: {check name: passed}}
SanityVerdicts = dict[str, dict[str, bool]]

# a verdicts file holds a few lines per method: anything larger is not one
MAX_VERDICTS_BYTES = 1 << 20


def _read_file(path: Path) -> object:
    if not path.is_file():
        raise ValueError(
            f"xai_sanity names {path}, which is not a file; give the JSON that `monai-xai sanity --verdicts_file` "
            "wrote, or a mapping such as {'gradcam': {'top_down': true}}."
        )
    if path.stat().st_size > MAX_VERDICTS_BYTES:
        raise ValueError(f"xai_sanity file {path} is over {MAX_VERDICTS_BYTES} bytes: not a verdicts file.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"xai_sanity file {path} is not valid JSON ({error}).") from None


def _verdict(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"xai_sanity {where} must be true or false, got {value!r}.")
    return value


def read_sanity_verdicts(value: Mapping[str, object] | str | Path | None) -> SanityVerdicts:
    """Each method's randomisation-check verdicts, ``{method: {check: passed}}`` (checks as
    :class:`~monai_xai.enums.SanityCheck` values).

    Args:
        value: None (unknown: no trust note); a mapping ``{method: passed}`` (the top-down check) or
            ``{method: {check: passed}}``; or the path of a JSON file holding one (``monai-xai sanity
            --verdicts_file``).

    Raises:
        ValueError: a missing, oversized or malformed file; a method whose verdict is neither a boolean nor a
            mapping of check names to booleans; an unknown check name.
    """
    if value is None:
        return {}
    content = _read_file(Path(value)) if isinstance(value, str | Path) else value
    if not isinstance(content, Mapping):
        raise ValueError(f"xai_sanity must map method names to verdicts, got {type(content).__name__}.")
    verdicts: SanityVerdicts = {}
    for method, given in content.items():
        if not isinstance(method, str):
            raise ValueError(f"xai_sanity's method names must be strings, got {method!r}.")
        if isinstance(given, Mapping):
            verdicts[method] = {
                as_choice(SanityCheck, check, f"xai_sanity's check of {method!r}").value: _verdict(
                    passed, f"{method!r} {check!r}"
                )
                for check, passed in given.items()
            }
        else:
            verdicts[method] = {SanityCheck.TOP_DOWN.value: _verdict(given, repr(method))}
    return verdicts
