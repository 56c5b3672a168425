"""Evaluation helpers on a real net: top-k error and Figure 7's layer-response statistics."""

import pytest
import torch

from resnet_repro import models
from resnet_repro.evaluate.accuracy import top_k_errors
from resnet_repro.evaluate.responses import LayerResponses, response_stds


def batches(count: int = 3, size: int = 16):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, 32, 32, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(count)]


def test_response_stds_equal_the_std_over_all_images_of_each_3x3_layer():
    torch.manual_seed(0)
    model = models.build("resnet20").eval()
    data = batches()
    rows = response_stds(model, data)
    names = list(models.response_modules(model))
    assert [row["name"] for row in rows] == names and len(rows) == 18  # 3 stages x 3 blocks x 2 layers
    everything = torch.cat([images for images, _ in data])
    outputs: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(lambda _m, _i, output, name=name: outputs.__setitem__(name, output))
               for name, module in models.response_modules(model).items()]
    with torch.no_grad():
        model(everything)
        block = model.get_submodule("layer1.0")
        assert isinstance(block, models.Block) and model.bn1 is not None
        first = block.bn1(block.conv1(model.relu(model.bn1(model.conv1(everything)))))
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(outputs["layer1.0.bn1"], first)
    for row in rows:
        assert abs(row["std"] - outputs[row["name"]].double().std(unbiased=False).item()) < 1e-4
    assert not model.training
    # The evaluate stage records them during its error pass: the same figures from the one pass.
    with LayerResponses(model) as recorded:
        top_k_errors(model, data, device=torch.device("cpu"))
    assert recorded.stds() == rows
    with pytest.raises(ValueError, match="no forward pass reached layer1.0.bn1"):
        LayerResponses(model).stds()


def test_top_k_errors_count_every_image_once():
    model = models.build("resnet20")
    data = batches()
    errors = top_k_errors(model, data, device=torch.device("cpu"))
    logits = torch.cat([model.eval()(images) for images, _ in data])
    labels = torch.cat([labels for _, labels in data])
    assert errors["num_images"] == 48
    assert errors["top1_error"] == pytest.approx((logits.argmax(1) != labels).double().mean().item())
    assert 0 <= errors["top5_error"] <= errors["top1_error"]


# --- the paper's ImageNet testing on image files --------------------------------------------------

@pytest.fixture(scope="module")
def photo_samples(tmp_path_factory, cifar10):
    from folders import cifar_image_folder
    from resnet_repro.data.imagefolder import scan

    root = cifar_image_folder(cifar10, tmp_path_factory.mktemp("photos"), classes=3, train_per_class=1,
                              val_per_class=4, sizes=[(48, 40), (40, 56), (44, 44)])
    return scan(root).samples["val"]


def test_ten_crop_and_multi_scale_average_the_softmax_of_every_view(photo_samples):
    """Recomputed here image by image, from data.views and the model, in the plainest way."""
    from resnet_repro.data.imagefolder import load_rgb
    from resnet_repro.data.views import multi_scale_views, ten_crop
    from resnet_repro.evaluate.multiview import errors_of, multi_scale_scores, ten_crop_scores

    torch.manual_seed(0)
    model = models.build("resnet20").eval()
    mean_image = torch.rand(3, 32, 32) * 255
    channel_mean = mean_image.mean(dim=(1, 2), keepdim=True)
    cpu = torch.device("cpu")

    def net(image, mean):  # one uint8 HWC image -> softmax
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float()
        return model(((tensor - mean) / 255)[None]).softmax(1)[0]

    labels = [sample.label for sample in photo_samples]
    with torch.no_grad():
        ten = torch.stack([torch.stack([net(crop, mean_image) for crop in ten_crop(load_rgb(s.path), 32, 36)]).mean(0)
                           for s in photo_samples])
        scales = torch.stack([torch.stack([net(view, channel_mean) for view in
                                           multi_scale_views(load_rgb(s.path), [32, 40, 64])]).mean(0)
                              for s in photo_samples])
    measured = list(ten_crop_scores(model, photo_samples, crop_size=32, resize=36, mean_image=mean_image,
                                    device=cpu, batch_size=20, num_workers=0))
    assert [len(labels) for _, labels in measured] == [2] * 6  # 20 crops per batch: 2 whole images
    assert torch.allclose(torch.cat([scores for scores, _ in measured]), ten, atol=1e-5)
    assert torch.cat([batch_labels for _, batch_labels in measured]).tolist() == labels
    measured = list(multi_scale_scores(model, photo_samples, scales=[32, 40, 64], mean_image=mean_image,
                                       device=cpu, num_workers=0))
    assert torch.allclose(torch.cat([scores for scores, _ in measured]), scales, atol=1e-5)
    # The averaged scores differ between the two protocols: the views are really there.
    assert not torch.allclose(ten, scales, atol=1e-3)
    errors = errors_of(measured)
    assert errors["num_images"] == 12
    assert errors["top1_error"] == pytest.approx((scales.argmax(1) != torch.tensor(labels)).double().mean().item())


def test_ten_crop_refuses_a_mean_image_of_another_size(photo_samples):
    from resnet_repro.evaluate.multiview import ten_crop_scores

    with pytest.raises(ValueError, match=r"mean image is \(24, 24\), the crops 32x32"):
        next(ten_crop_scores(models.build("resnet20"), photo_samples, crop_size=32, resize=36,
                             mean_image=torch.zeros(3, 24, 24), device=torch.device("cpu"), batch_size=20,
                             num_workers=0))
