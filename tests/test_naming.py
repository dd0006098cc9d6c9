"""Case names from outside made safe as file names: crafted names stay inside their folder, never take a name the run
uses itself, never break a plot title, and stay unique."""

from __future__ import annotations

import pytest

from monai_xai.naming import CASE_NAME_MAX, CaseNames, safe_stem, strip_image_suffix


@pytest.mark.parametrize(
    "name, stem",
    [
        ("case_001", "case_001"),
        ("../../x", "x"),
        ("...", "case"),
        ("..", "case"),
        ("/etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        (".report-parts", "report-parts"),
        ("$\\frac{a}{b}$", "frac_a_b"),
        ("index.html", "index.html_case"),
        ("CASES.CSV", "CASES.CSV_case"),
        ("mlflow", "mlflow_case"),
        ("javascript:alert(1)<!--", "javascript_alert_1"),
        ("naïve scan", "na_ve_scan"),
    ],
)
def test_a_crafted_name_becomes_a_safe_stem(name, stem):
    assert safe_stem(name) == stem


def test_long_names_are_capped_and_stay_apart():
    first, second = "x" * 300 + "a", "x" * 300 + "b"
    assert len(safe_stem(first)) <= CASE_NAME_MAX and safe_stem(first) != safe_stem(second)


def test_case_names_are_unique_whatever_the_spelling():
    names = CaseNames()
    stems = [names.stem(name) for name in ("a", "a", "A", "a/", "../a", "")]
    assert stems == ["a", "a_1", "A_2", "a_3", "a_4", "case"]
    assert len(names) == 6


def test_image_suffixes_are_stripped_case_insensitively():
    assert strip_image_suffix("ct.NII.GZ") == "ct" and strip_image_suffix("x.png") == "x"
    assert strip_image_suffix("...nii.gz") == ".." and strip_image_suffix("scan.tar") == "scan.tar"
