"""farmer.likelihood.within_patch_share: the share of a map's variance inside its patches."""
import pytest
import torch

from farmer.likelihood import within_patch_share


def test_patch_constant_map_has_no_within_patch_variance_and_zero_mean_patches_have_all():
    coarse = torch.randn(3, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)   # constant per 4x4 patch
    assert within_patch_share(coarse, 4) == pytest.approx(0.0, abs=1e-12)
    checker = torch.tensor([[1., -1.] * 2] * 4)                                          # rows +1 -1 +1 -1
    fine = checker.repeat(4, 4)[None, None].repeat(2, 1, 1, 1)                           # every patch mean 0
    assert within_patch_share(fine, 4) == pytest.approx(1.0)


def test_share_matches_the_law_of_total_variance_per_image_and_channel():
    torch.manual_seed(0)
    x = (torch.randn(5, 2, 8, 12) + torch.randn(5, 2, 1, 1) * 3).double()                          # offsets per channel
    expected = []
    for img in x:
        within = total = 0.0
        for ch in img:
            total += float(((ch - ch.mean()) ** 2).sum())
            for i in range(0, 8, 4):
                for j in range(0, 12, 4):
                    patch = ch[i:i + 4, j:j + 4]
                    within += float(((patch - patch.mean()) ** 2).sum())
        expected.append(within / total)
    assert within_patch_share(x, 4) == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    assert within_patch_share(torch.zeros(2, 1, 8, 8), 4) == 0.0                          # a flat map counts 0
    with pytest.raises(ValueError, match="patch_size"):
        within_patch_share(x, 5)
