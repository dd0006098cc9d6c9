"""Data with ground truth for explanation research (deterministic MR-like lesion phantoms), readers that turn the
studies' public data sets, as published, into MONAI datalists, and the pieces that let a run skip the cases it cannot
read."""

from .brain_tumor_mri import BRAIN_TUMOR_CLASSES, brain_tumor_mri_datalist, write_brain_tumor_mri_datalist
from .chest_xray import CHEST_XRAY_CLASSES, chest_xray_datalist, write_chest_xray_datalist
from .class_folders import ToRGB, ToRGBd
from .egd_cxr import (
    EGD_CXR_CLASSES,
    InvertDicomMonochrome1d,
    LoadGazeHeatmapd,
    PadResized,
    egd_cxr_datalist,
    read_gaze_heatmap,
    write_egd_cxr_datalist,
)
from .kits23 import (
    KITS23_CLASSES,
    foreground_hu_range,
    kits23_datalist,
    msd_class_names,
    msd_datalist,
    write_kits23_datalist,
)
from .permuted import permuted_labels
from .phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    PhantomCase,
    ensure_phantom_dataset,
    generate_phantom,
    phantom_slice,
    write_phantom_dataset,
)
from .siim_pneumothorax import (
    PNEUMOTHORAX_CLASSES,
    InvertMonochrome1d,
    rle_decode,
    rle_encode,
    siim_pneumothorax_datalist,
    write_siim_pneumothorax_datalist,
)
from .skin_lesions import (
    HAM10000_CLASSES,
    ISIC2019_CLASSES,
    SKIN_LESION_CLASSES,
    class_weights,
    ham10000_datalist,
    isic2019_datalist,
    skin_lesion_datalist,
    write_skin_lesion_datalist,
)
from .splits import datalist_summary, stratified_split, write_datalist
from .unreadable import ReadableCases, ReadableCasesCollate, SkipUnreadableCases

__all__ = [
    "BRAIN_TUMOR_CLASSES",
    "CHEST_XRAY_CLASSES",
    "HAM10000_CLASSES",
    "KITS23_CLASSES",
    "ISIC2019_CLASSES",
    "PNEUMOTHORAX_CLASSES",
    "SKIN_LESION_CLASSES",
    "InvertMonochrome1d",
    "ToRGB",
    "ToRGBd",
    "brain_tumor_mri_datalist",
    "chest_xray_datalist",
    "class_weights",
    "datalist_summary",
    "foreground_hu_range",
    "ham10000_datalist",
    "isic2019_datalist",
    "kits23_datalist",
    "msd_class_names",
    "msd_datalist",
    "rle_decode",
    "rle_encode",
    "siim_pneumothorax_datalist",
    "skin_lesion_datalist",
    "stratified_split",
    "write_brain_tumor_mri_datalist",
    "write_chest_xray_datalist",
    "write_datalist",
    "write_kits23_datalist",
    "write_siim_pneumothorax_datalist",
    "write_skin_lesion_datalist",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PhantomCase",
    "ensure_phantom_dataset",
    "permuted_labels",
    "generate_phantom",
    "phantom_slice",
    "write_phantom_dataset",
    "ReadableCases",
    "ReadableCasesCollate",
    "SkipUnreadableCases",
    "EGD_CXR_CLASSES",
    "InvertDicomMonochrome1d",
    "LoadGazeHeatmapd",
    "PadResized",
    "egd_cxr_datalist",
    "read_gaze_heatmap",
    "write_egd_cxr_datalist",
]
