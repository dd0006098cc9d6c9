"""An input attribution's per-channel shares in a description: one sentence per region, largest share first, the
shares as table columns."""

import math

import pytest
import torch

from monai_xai.describe import WHOLE_IMAGE, describe


def test_shares_are_worded_per_region_largest_first():
    heat = torch.zeros(1, 12, 12)
    heat[0, 3:6, 3:6] = 1.0
    shares = {WHOLE_IMAGE: (0.125, 0.875), "ground-truth region": (0.02, 0.98), "explained region": (math.nan,) * 2}
    description = describe(heat, channel_shares=shares, channel_names=["T1", "FLAIR"])
    assert "Attribution by input channel: FLAIR 88%, T1 12%." in description.text
    assert "Attribution by input channel in the ground-truth region: FLAIR 98%, T1 2%." in description.text
    assert "explained region" not in description.text  # no attribution there: no sentence
    row = description.as_dict()
    assert row["share_FLAIR_image"] == 0.875 and row["share_T1_ground-truth region"] == 0.02
    unnamed = describe(heat, channel_shares={WHOLE_IMAGE: (0.7, 0.2, 0.1)})
    assert "Attribution by input channel: channel 0 70%, channel 1 20%, channel 2 10%." in unnamed.text
    assert describe(heat).channel_shares == {}  # a CAM's description has none
    with pytest.raises(ValueError, match="2 channel names"):
        describe(heat, channel_shares={WHOLE_IMAGE: (0.7, 0.2, 0.1)}, channel_names=["T1", "T2"])
