"""``python -m monai_xai.sanity <bundle> [--datalist ...]``: print the sanity table (``monai-xai sanity``)."""

import fire

from monai_xai.cli import sanity

if __name__ == "__main__":
    fire.Fire(sanity)
