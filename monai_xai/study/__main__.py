"""``python -m monai_xai.study <study.json> [--output_dir DIR] [--overwrite] [--report_only]`` (also under torchrun)."""

import fire

from monai_xai.cli import study

if __name__ == "__main__":
    fire.Fire(study)
