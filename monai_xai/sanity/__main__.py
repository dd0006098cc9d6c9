"""``python -m monai_xai.sanity <bundle> [--datalist ...]``: print the sanity table (``bundle_sanity_table``)."""

import fire

from monai_xai.sanity.bundle import bundle_sanity_table

if __name__ == "__main__":
    fire.Fire(bundle_sanity_table)
