"""``--pretrained hub``: a backbone's timm pretrained tag, read from the local Hugging Face cache
(written here in the library's own layout, for a tiny timm model registered with hub weights),
loaded through the real path with the network off; without the cache a run is refused with one
line before any work. No test touches the network."""

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from timm.models import _registry, generate_default_cfgs, register_model, vision_transformer

import run_benchmark
from models import factory
from models.factory import HUB, BackboneError, create_backbone, create_hub_backbone, hub_weights

# a ViT (family vit) at the bundled streams' 28x28 x 1, with a tag whose weights are on the hub
NAME, TAG = "vit_hubtest_patch7", "test_in10"
REPO = f"timm/{NAME}.{TAG}"
REVISION = "0123456789abcdef0123456789abcdef01234567"
N_CLASSES, DIM = 10, 32
SIZES = dict(img_size=28, patch_size=7, embed_dim=DIM, depth=2, num_heads=2, in_chans=1)

# what timm's register_model reads from the entrypoint's module: the tag, with hub weights
default_cfgs = generate_default_cfgs({f"{NAME}.{TAG}": {
    "hf_hub_id": "timm/", "num_classes": N_CLASSES, "input_size": (1, 28, 28),
    "mean": (0.5,), "std": (0.25,), "first_conv": "patch_embed.proj", "classifier": "head"}})


def vit_hubtest_patch7(pretrained=False, **kwargs):
    return vision_transformer._create_vision_transformer(
        NAME, pretrained=pretrained, **{**SIZES, **kwargs})


@pytest.fixture
def hub_model():
    """The tiny model in timm's registry for one test (removed afterwards)."""
    register_model(vit_hubtest_patch7)
    yield NAME
    _registry._clear_model_entries(NAME)
    _registry._model_entrypoints.pop(NAME, None)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, the network off (HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def write_hub_weights(cache, state: dict, revision: str = REVISION):
    """``state`` as the hub's weights of the tag, in huggingface_hub's cache layout."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps(
        {"architecture": NAME, "num_classes": N_CLASSES, "pretrained_cfg": {"tag": TAG}}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


@pytest.fixture
def written(hub_model, hub_cache):
    """Random weights of the tag (its 10-way head included), written into the cache."""
    torch.manual_seed(1)
    state = timm.create_model(NAME, num_classes=N_CLASSES).state_dict()
    write_hub_weights(hub_cache, state)
    return state


def run_main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_benchmark.main(list(args))
        except SystemExit as e:
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_hub_weights_load_as_written_without_their_head(written):
    model, base_head, weights = create_hub_backbone(NAME)
    assert weights.tag == f"{NAME}.{TAG}" and weights.repo == REPO
    assert weights.meta() == {"base": "hub", "tag": f"{NAME}.{TAG}", "repo": REPO,
                              "revision": REVISION, "file": "model.safetensors"}
    assert base_head == N_CLASSES * DIM + N_CLASSES  # head.weight + head.bias, as a file's
    assert model.num_classes == 0 and isinstance(model.head, torch.nn.Identity)
    loaded = model.state_dict()
    assert set(loaded) == {k for k in written if not k.startswith("head.")}
    for k, v in loaded.items():
        assert torch.equal(v, written[k]), k
    # create_backbone(pretrained="hub") is the same model, with the suite's attention layers
    again = create_backbone(NAME, pretrained=HUB)
    assert all(torch.equal(v, loaded[k]) for k, v in again.state_dict().items())
    from models.attention import MaskableAttention
    assert any(isinstance(m, MaskableAttention) for m in again.modules())


def test_hub_weights_that_do_not_fit_are_an_error(hub_model, hub_cache):
    state = timm.create_model(NAME, num_classes=N_CLASSES).state_dict()
    state.pop("blocks.1.mlp.fc2.bias")  # a partial checkpoint is an error, not a silent mix
    write_hub_weights(hub_cache, state)
    with pytest.raises(BackboneError, match="does not fit backbone"):
        create_hub_backbone(NAME)


@pytest.mark.slow
def test_a_cli_run_from_hub_weights_records_the_tag_and_bills_the_head(written, tmp_path):
    out = tmp_path / "out"
    r = run_main("--suite", "smoke", "--stream", "digits-split2", "--backbone", NAME,
                 "--pretrained", "hub", "--strategies", "classifier", "--steps-per-task", "2",
                 "--device", "cpu", "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--quiet")
    assert r.returncode == 0, r.stderr
    (record_file,) = out.glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["config"]["pretrained"] == "hub"
    assert record["base"] == {"base": "hub", "tag": f"{NAME}.{TAG}", "repo": REPO,
                              "revision": REVISION, "file": "model.safetensors"}
    n_params = sum(v.numel() for k, v in written.items() if not k.startswith("head."))
    head = N_CLASSES * DIM + N_CLASSES  # the tag's head, billed as a local file's
    assert record["storage"]["base_bits"] == 32 * (n_params + head)


def test_without_the_cache_the_cli_refuses_with_one_line(hub_model, hub_cache, tmp_path):
    out = tmp_path / "out"
    r = run_main("--suite", "smoke", "--backbone", NAME, "--pretrained", "hub",
                 "--strategies", "classifier", "--out", str(out), "--cache", str(tmp_path / "c"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [
        f"run_benchmark.py: error: --pretrained hub: {NAME}.{TAG} is not in the local Hugging "
        f"Face cache ({hub_cache}) and the network is off (HF_HUB_OFFLINE=1); give --pretrained "
        "FILE, or --download on a connected machine to fetch it"]
    assert r.stdout == ""
    assert not out.exists() and not (tmp_path / "c").exists()
    assert list(hub_cache.iterdir()) == []


def test_the_paper_suite_asks_for_its_deit_weights_offline(hub_cache, tmp_path):
    r = run_main("--suite", "paper", "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "--pretrained hub: deit_tiny_patch16_224.fb_in1k is not in the local Hugging Face " \
           "cache" in line and "give --pretrained FILE" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backbone, expect", [
    ("t2t_vit_12", "timm hosts no T2T-ViT weights; download the official release https://"
                   "github.com/yitu-opensource/T2T-ViT/releases/download/main/"
                   "76.5_T2T_ViT_12.pth.tar and give --pretrained FILE"),
    ("vit_micro", "vit_micro is one of the suite's own configs (models/registered.py), with no "
                  "hub weights; give --pretrained FILE"),
    ("vit_nano", "give --pretrained FILE"),
])
def test_backbones_without_hub_weights_name_the_file_to_give(hub_cache, backbone, expect):
    with pytest.raises(BackboneError, match="--pretrained hub: ") as e:
        hub_weights(backbone)
    assert expect in str(e.value)


def test_a_suite_backbone_with_hub_is_refused_by_the_cli(hub_cache, tmp_path):
    r = run_main("--suite", "smoke", "--pretrained", "hub", "--strategies", "classifier",
                 "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "vit_micro is one of the suite's own configs" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opt_in", ["--download", "HF_HUB_OFFLINE=0"])
def test_an_opt_in_downloads_the_weights_once(written, hub_cache, monkeypatch, tmp_path,
                                              opt_in):
    """--download (``network``) or HF_HUB_OFFLINE=0: a tag that is not cached is fetched (here
    by a stand-in of hf_hub_download that writes the cache as the hub would), then read from
    the cache. --download lifts huggingface_hub's offline mode for the download only."""
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(empty))
    network = opt_in == "--download"
    if not network:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls = []

    def download(repo, filename, revision=None):
        calls.append((repo, filename, hf_constants.HF_HUB_OFFLINE))
        return str(write_hub_weights(empty, written))

    monkeypatch.setattr(factory, "hf_hub_download", download)
    assert hub_weights(NAME, network=network) is None  # not cached, fetchable: the CLI's check
    model, _, weights = create_hub_backbone(NAME, network=network)
    assert calls == [(REPO, "model.safetensors", False)]
    assert hf_constants.HF_HUB_OFFLINE is network  # offline mode back as it was
    assert weights.path.is_relative_to(empty)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"],
                       written["blocks.0.attn.qkv.weight"])
    create_hub_backbone(NAME, network=network)  # cached now: no second download
    assert len(calls) == 1


def test_an_unreachable_hub_is_one_line(hub_model, hub_cache, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def unreachable(repo, filename, revision=None):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on "
                                      "the Hub and we cannot find the requested files\nmore")

    monkeypatch.setattr(factory, "hf_hub_download", unreachable)
    with pytest.raises(BackboneError) as e:
        hub_weights(NAME, fetch=True)
    assert str(e.value) == (
        f"--pretrained hub: cannot download {NAME}.{TAG} from the Hugging Face hub (the hub is "
        "unreachable); give --pretrained FILE, or fetch it on a connected machine into the "
        "Hugging Face cache this one reads")


def test_hub_normalization_is_the_tags(hub_model):
    from benchmarks.suites import resolved_preprocess

    p = resolved_preprocess({"backbone": "deit_tiny_patch16_224", "pretrained": HUB,
                             "preprocess": "deit"})
    assert tuple(p["mean"]) == (0.485, 0.456, 0.406) and tuple(p["std"]) == (0.229, 0.224, 0.225)
    p = resolved_preprocess({"backbone": NAME, "pretrained": HUB, "preprocess": "deit"})
    assert tuple(p["mean"]) == (0.5,) and tuple(p["std"]) == (0.25,)


def test_the_cli_fetches_with_download_before_any_run(written, hub_cache, monkeypatch, tmp_path):
    """``--download --pretrained hub``: build_configs (every input checked first) fetches the
    weights into the cache; the runs then read it."""
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(empty))
    calls = []

    def download(repo, filename, revision=None):
        calls.append(repo)
        return str(write_hub_weights(empty, written))

    monkeypatch.setattr(factory, "hf_hub_download", download)
    argv = ["--suite", "smoke", "--backbone", NAME, "--pretrained", "hub", "--strategies",
            "classifier", "--out", str(tmp_path / "out")]
    with pytest.raises(run_benchmark.UsageError, match="--download on a connected machine"):
        run_benchmark.build_configs(run_benchmark.run_parser().parse_args(argv))
    suite, configs = run_benchmark.build_configs(
        run_benchmark.run_parser().parse_args([*argv, "--download"]))
    assert calls == [REPO] and [c.pretrained for c in configs] == ["hub"]
    assert hub_weights(NAME).path.is_relative_to(empty)
    assert not (tmp_path / "out").exists()
