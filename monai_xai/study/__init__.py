"""``monai-xai study``: a published comparison protocol as one reproducible command.

A study file (:mod:`monai_xai.study.spec`) names bundles, layers, CAM methods, metrics, data and statistics;
:func:`run_study` explains and scores every case x method x layer x bundle into a row store that survives a kill
(:mod:`monai_xai.study.store`), split over ``torchrun`` ranks when launched so, and writes the report
(:mod:`monai_xai.study.report`) and its MLflow runs (:mod:`monai_xai.study.tracking`)::

    monai-xai study configs/studies/demo_phantoms.json
    torchrun --nproc_per_node 2 -m monai_xai.study configs/studies/demo_phantoms.json
"""

from monai_xai.study.cases import StudyCase, study_cases
from monai_xai.study.report import StudyReport, study_tables, write_report
from monai_xai.study.runner import run_study
from monai_xai.study.spec import StudyBundle, StudyData, StudySpec, load_study, study_from_dict
from monai_xai.study.store import StudyStore, StudyStoreError, study_store
from monai_xai.study.tracking import track_study, tracking_uri

__all__ = [
    "StudyBundle",
    "StudyCase",
    "StudyData",
    "StudyReport",
    "StudySpec",
    "StudyStore",
    "StudyStoreError",
    "load_study",
    "run_study",
    "study_cases",
    "study_from_dict",
    "study_store",
    "study_tables",
    "track_study",
    "tracking_uri",
    "write_report",
]
