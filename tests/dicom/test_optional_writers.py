"""highdicom is an extra (``dicom``): without it every run still reads DICOM series (the overlay registers the reader
on every bundle run), and only asking for the writers fails, saying how to install them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WITHOUT_HIGHDICOM = """
import sys
sys.modules["highdicom"] = None  # what `import highdicom` meets when it is not installed
import monai_xai.data, monai_xai.handlers, monai_xai.bundle
from monai_xai.dicom import DicomSeriesReader, register_dicom_reader
from monai_xai.handlers import DicomExplanationWriter
try:
    from monai_xai.dicom import write_heat_seg
except ModuleNotFoundError as error:
    print("writer:", error)
try:
    DicomExplanationWriter(["gradcam"])
except ModuleNotFoundError as error:
    print("handler:", error)
"""


def test_reading_needs_no_highdicom_and_the_writers_say_how_to_install_it():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_HIGHDICOM], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["writer", "handler"]
    assert all("pip install 'monai-xai[dicom]'" in line for line in lines)
