"""The standard evaluators on real models: NudeNet's ONNX detector from its wheel, a local
transformers image classifier, and CLIP / DINOv2 features for the Fréchet distance, each
through its registered metric (the hand-computed cases with fixed inputs are in
tests/test_metric_registry.py).

The classifier and feature models are tiny random ones the test saves to ``tmp_path`` with
their image processors; every number is checked against the model called directly on the
pixels the processor should produce (images at the model's size, normalised with mean and
std 0.5, so the processor's pixels equal the [−1, 1] images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.metric import Need
from obliviate.core.registry import METRICS
from obliviate.diffusion.metrics import (  # noqa: F401  (registers them)
    classifier,
    feature_distance,
    nudity,
    unlearncanvas,
)
from obliviate.diffusion.metrics.base import Samples


class Inputs:
    def __init__(self, values):
        self.values = values

    def get(self, need):
        return self.values[need]


def exact_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """RGB images in [−1, 1] whose uint8 round trip is exact (k / 127.5 − 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 127.5 - 1


# -- NudeNet --------------------------------------------------------------------------------
def test_nudenet_runs_on_generated_images_and_is_deterministic():
    from obliviate.diffusion.metrics.nudity import ALL_CLASSES
    from obliviate.diffusion.models import ModelConfig, build_denoiser
    from obliviate.diffusion.sampling import sample

    model = build_denoiser(ModelConfig(channels=[16, 32], cond_dim=16, time_dim=32,
                                       sample_steps=4), 10, 8, 1, seed=0)
    labels = torch.arange(3)
    images = sample(model, labels, seed=0)
    samples = Samples(images, labels, [str(i) for i in range(10)])
    metric = METRICS.get("nudity_rate", "diffusion")()
    first = metric.compute(Inputs({Need.samples("forget"): samples}), "forget")
    again = metric.compute(Inputs({Need.samples("forget"): samples}), "forget")
    assert first.split == "forget" and len(first.per_item) == 3
    assert set(first.per_item) <= {0.0, 1.0}
    assert first.details["detections"] == again.details["detections"]
    assert len(first.details["detections"]) == 3
    for dets in first.details["detections"]:
        for d in dets:
            assert d["class"] in ALL_CLASSES
            assert 0 <= d["score"] <= 1 and len(d["box"]) == 4


def test_nudenet_finds_the_face_in_a_photograph(tmp_path):
    """A known positive the detector's classes allow without nudity: matplotlib's sample photo
    of Grace Hopper shows a woman's face (FACE_FEMALE) and no exposed class."""
    from matplotlib import cbook
    from PIL import Image

    from obliviate.diffusion.metrics.nudity import NudityDetector, nudity_rate

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    detector = NudityDetector()
    from_array = detector([rgb])
    # the same detections as NudeNet reading the file itself (BGR, as cv2.imread gives)
    assert from_array[0] == [{**d, "score": float(d["score"])}
                             for d in detector.detector.detect(str(path))]
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert detector(tensor) == from_array
    classes = [d["class"] for d in from_array[0]]
    assert "FACE_FEMALE" in classes
    assert nudity_rate(from_array).value == 0.0
    assert nudity_rate(from_array, classes=["FACE_FEMALE"], threshold=0.3).value == 1.0
    with pytest.raises(ConfigError, match="unknown NudeNet classes"):
        nudity_rate(from_array, classes=["FACE"])


# -- image classifier -----------------------------------------------------------------------
@pytest.fixture
def vit_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    names = {0: "church, church building", 1: "garbage truck, dustcart", 2: "tench"}
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3,
                       id2label=names, label2id={v: k for k, v in names.items()})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():  # class k's weights: image k's centred features, so the top-1 class
        feats = model.vit(pixel_values=exact_images(8, 16)).last_hidden_state[:, 0]  # varies
        model.classifier.weight.copy_(100 * (feats[:3] - feats.mean(0)))
        model.classifier.bias.zero_()
    model.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(tmp_path / "vit")
    return tmp_path / "vit", model


def test_classifier_accuracy_matches_the_models_own_logits(vit_folder):
    folder, model = vit_folder
    images = exact_images(8, 16)
    with torch.no_grad():
        logits = model(pixel_values=images).logits
    top = logits.argmax(-1)
    # each sample's intended class: a task class name mapped to a classifier class
    names = ["church", "garbage_truck", "fish"]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    metric = METRICS.get("classifier_accuracy", "diffusion")(
        {"path": str(folder), "label_map": {"fish": "tench"}})
    got = metric.compute(Inputs({Need.samples("retain"): Samples(images, labels, names)}),
                         "retain")
    assert torch.allclose(metric.classifier.logits(images), logits, atol=1e-5)
    expected = [float(p == y) for p, y in zip(top.tolist(), labels.tolist(), strict=True)]
    assert got.per_item == expected and got.value == pytest.approx(sum(expected) / 8)
    assert got.details["predicted"] == top.tolist()
    assert len(set(top.tolist())) > 1 and got.split == "retain"  # not one class for all
    # names, synonyms and indices name the same class; an unknown name is one line
    clf = metric.classifier
    assert clf.label_index("Garbage_Truck") == clf.label_index("dustcart") == 1
    assert clf.label_index("church, church building") == 0 and clf.label_index(2) == 2
    with pytest.raises(ConfigError, match="no class named 'parachute'"):
        clf.label_index("parachute")


# -- feature Fréchet distance ---------------------------------------------------------------
def tiny_dinov2(folder):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(image_size=16, patch_size=8, hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).eval()
    model.save_pretrained(folder)
    BitImageProcessor(size={"height": 16, "width": 16}, do_center_crop=False,
                      image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return model, lambda x: model(pixel_values=x).pooler_output


def tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    layer = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}
    model = CLIPModel(CLIPConfig(text_config={**layer, "vocab_size": 64},
                                 vision_config={**layer, "image_size": 16, "patch_size": 8},
                                 projection_dim=8)).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                       image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)

    def direct(x):
        out = model.get_image_features(pixel_values=x)
        return getattr(out, "pooler_output", out)
    return model, direct


@pytest.mark.parametrize("build", [tiny_dinov2, tiny_clip], ids=["dinov2", "clip"])
def test_feature_fid_on_a_local_vision_model(tmp_path, build):
    from obliviate.diffusion.metrics.distances import frechet_distance
    from obliviate.diffusion.metrics.feature_distance import FeatureExtractor

    model, direct = build(tmp_path / "features")
    generated, real = exact_images(6, 16, seed=1), exact_images(5, 16, seed=2)
    with torch.no_grad():
        want_g, want_r = direct(generated).numpy(), direct(real).numpy()
    extractor = FeatureExtractor(tmp_path / "features")
    assert np.allclose(extractor(generated), want_g, atol=1e-5)
    metric = METRICS.get("feature_fid", "diffusion")({"path": str(tmp_path / "features")})
    names, zeros = ["a"], torch.zeros(6).long()
    inputs = Inputs({Need.samples("retain"): Samples(generated, zeros, names),
                     Need.samples("retain", real=True): Samples(real, zeros[:5], names)})
    got = metric.compute(inputs, "retain")
    # the one Fréchet implementation the judge's FID uses, on the model's own features
    assert got.value == pytest.approx(frechet_distance(want_g, want_r), rel=1e-4)
    assert got.value > 0 and got.details["n_generated"] == 6 and got.details["n_real"] == 5
    assert extractor(generated).shape == want_g.shape


def test_vision_folder_errors_are_one_line(tmp_path):
    from obliviate.core.errors import ModelLoadError
    from obliviate.diffusion.metrics.classifier import ImageClassifier
    from obliviate.diffusion.metrics.feature_distance import FeatureExtractor

    for cls in (ImageClassifier, FeatureExtractor):
        with pytest.raises(ModelLoadError) as err:
            cls(tmp_path / "missing")
        assert "\n" not in str(err.value) and "missing" in str(err.value)


# -- UnlearnCanvas --------------------------------------------------------------------------
def test_unlearncanvas_refuses_what_it_cannot_score():
    from obliviate.diffusion.metrics.unlearncanvas import CanvasSample, canvas_accuracies

    both = [CanvasSample("x", "x", "x", "x")]
    with pytest.raises(DataError, match="both a style and an object"):
        canvas_accuracies(both, "x")
    with pytest.raises(DataError, match="no prompt names it"):
        canvas_accuracies(both, "y")
    unjudged = [CanvasSample("A", "cat", predicted_style="A"), CanvasSample("B", "dog", "B")]
    with pytest.raises(DataError, match="no object prediction"):
        canvas_accuracies(unjudged, "A", "style")


# -- pluggable: a recipe's evaluation.metrics ----------------------------------------------
def test_evaluation_computes_the_metrics_a_recipe_names(tmp_path, digits_task):
    """``evaluation.metrics`` adds registered metrics to the generation suite's result, on
    each of ``metric_splits``; feature_fid compares the samples with the split's real
    held-out images (not the judge's features)."""
    from obliviate.diffusion.evaluation import (
        EvaluationConfig,
        evaluate_denoiser,
        reference_images,
    )
    from obliviate.diffusion.judge import JudgeNet
    from obliviate.diffusion.metrics.distances import frechet_distance
    from obliviate.diffusion.metrics.feature_distance import FeatureExtractor
    from obliviate.diffusion.models import ModelConfig, build_denoiser
    from obliviate.diffusion.task import retain_classes

    tiny_dinov2(tmp_path / "dino")
    model = build_denoiser(ModelConfig(channels=[16, 32], cond_dim=16, time_dim=32,
                                       sample_steps=2), 10, 8, 1, seed=0)
    judge = JudgeNet(1, 10, 8, width=4, feature_dim=4)
    config = EvaluationConfig(samples_per_class=2, grid_per_class=0, metrics={
        "nudity_rate": {}, "feature_fid": {"path": str(tmp_path / "dino")}})
    result = evaluate_denoiser(model, judge, digits_task, config)
    for key in ("forget/nudity_rate", "retain/nudity_rate", "forget/feature_fid",
                "retain/feature_fid"):
        assert key in result.metrics
    assert len(result.metrics["retain/nudity_rate"].per_item) == 2 * 9
    # by hand: the same features of the retain samples and of the real retain images
    from obliviate.diffusion.sampling import sample

    labels = torch.arange(10).repeat_interleave(2)
    images = sample(model, labels, seed=config.seed, batch_size=config.batch_size)
    keep = torch.isin(labels, torch.tensor(retain_classes(digits_task)))
    x_real, y_real = reference_images(digits_task)
    real = x_real[torch.isin(y_real, torch.tensor(retain_classes(digits_task)))]
    extract = FeatureExtractor(tmp_path / "dino")
    want = frechet_distance(extract(images[keep]), extract(real))
    assert result.metrics["retain/feature_fid"].value == pytest.approx(want, rel=1e-4)
    assert result.metrics["retain/feature_fid"].details["n_real"] == len(real)

    bad = EvaluationConfig(samples_per_class=2, grid_per_class=0,
                           metrics={"classifier_accuracy": {}})
    with pytest.raises(ConfigError, match=r"evaluation\.metrics\.classifier_accuracy\.path"):
        evaluate_denoiser(model, judge, digits_task, bad)
