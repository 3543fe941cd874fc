"""CIFAR-style ResNets: shapes, parameter counts (He et al. 2016, Table 6), and that both norms train."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from warmup_lab.errors import ConfigError
from warmup_lab.models import build_image_model, count_params
from warmup_lab.models.resnet import ResNet
from warmup_lab.paths import CONF_DIR


@pytest.mark.parametrize("depth,params_m", [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_output_shape_and_paper_param_counts(depth, params_m):
    torch.manual_seed(0)
    model = ResNet(depth, norm="batchnorm", shortcut="A", in_channels=3, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert round(count_params(model) / 1e6, 2) == params_m


def test_resnet20_exact_count_width_channels_and_option_b():
    assert count_params(ResNet(20)) == 269_722           # the usual CIFAR ResNet-20 with option A
    assert count_params(ResNet(20, shortcut="B")) > count_params(ResNet(20))  # B adds projections
    wide = ResNet(20, width=2, in_channels=1, num_classes=7)
    assert wide.fc.in_features == 128
    assert wide(torch.randn(3, 1, 16, 16)).shape == (3, 7)
    assert ResNet(20, norm="none")(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_no_norm_has_no_batchnorm_and_keeps_the_signal_scaled_at_depth():
    torch.manual_seed(0)
    model = ResNet(56, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    block = model.blocks[0]
    ratio = block.conv2.weight.detach().std() / block.conv1.weight.detach().std()
    assert ratio == pytest.approx(len(model.blocks) ** -0.5, rel=0.1)   # last conv scaled by L^-1/2
    with torch.no_grad():
        stem = F.relu(model.conv1(torch.randn(16, 3, 16, 16)))
        out = model.blocks(stem)
    assert 0.5 < out.pow(2).mean().sqrt() / stem.pow(2).mean().sqrt() < 2.0   # no blow-up over 27 blocks


def _digit_batch(n=32):
    from warmup_lab.data.images import load_digits

    data = load_digits(size=8, n_test=300)
    return data.x_train[:n], data.y_train[:n]


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_both_norms_train_on_a_fixed_batch(norm):
    torch.manual_seed(0)
    model = ResNet(20, norm=norm, in_channels=1, num_classes=10)
    x, y = _digit_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)  # 0.05 catapults without norm
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


def test_build_from_config_validates():
    cfg = OmegaConf.load(CONF_DIR / "model" / "resnet32.yaml")
    assert count_params(build_image_model(cfg, 3, 10)) == count_params(ResNet(32))
    for key, bad in [("depth", 21), ("norm", "layernorm"), ("shortcut", "C"), ("family", "transformer")]:
        broken = OmegaConf.merge(cfg, {key: bad})
        with pytest.raises(ConfigError, match=key):
            build_image_model(broken, 3, 10)
