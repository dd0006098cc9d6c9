"""``python -m monai_xai.sanity <bundle> [--datalist ...]``: print the sanity table (``monai-xai sanity``)."""

import fire

from monai_xai.cli import sanity
from monai_xai.threads import apply_thread_policy

if __name__ == "__main__":
    apply_thread_policy()
    fire.Fire(sanity)
