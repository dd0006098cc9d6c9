"""monai-xai: explainability for MONAI networks (class-activation maps, faithfulness and localisation metrics)."""

__version__ = "0.1.0"
