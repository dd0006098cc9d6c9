"""``python -m monai_xai.study <study.json> [--output_dir DIR] [--overwrite] [--report_only]`` (also under torchrun)."""

import fire

from monai_xai.cli import study
from monai_xai.threads import apply_thread_policy

if __name__ == "__main__":
    apply_thread_policy()
    fire.Fire(study)
