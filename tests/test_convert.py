"""Importing the authors' EDMPrecond state dict: key layout, strictness, identical outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import models
from models.edm import EDMPrecond
from models.networks import DualUNet, get_arch

# Keys as the authors' EDMPrecond(DualUNet).state_dict() names them (Dahoas/edm,
# training/networks.py): level-indexed ModuleDicts, DualConv = spatial_conv + spectral_conv.
AUTHOR_KEYS = [
    "model.map_augment.weight", "model.map_layer0.weight", "model.map_layer1.bias",
    "model.enc.0_conv.spatial_conv.weight", "model.enc.0_conv.spectral_conv.weights1",
    "model.enc.1_down.conv0.spatial_conv.resample_filter", "model.enc.1_down.conv0.spectral_conv.weights2",
    "model.enc.1_down.skip.weight", "model.enc.0_block0.affine.weight", "model.enc.0_block0.norm1.bias",
    "model.dec.3_in0.qkv.weight", "model.dec.3_in0.proj.bias", "model.dec.1_up.conv0.spectral_conv.weights1",
    "model.dec.0_block1.conv1.spatial_conv.weight", "model.dec.0_aux_norm.weight",
    "model.dec.0_aux_conv.spectral_conv.weights2",
]


def authors_state_dict(arch) -> dict[str, torch.Tensor]:
    """A state dict in the authors' layout with random (non-initial) values."""
    torch.manual_seed(1)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in EDMPrecond(DualUNet(arch)).state_dict().items()}
    g = torch.Generator().manual_seed(2)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


FIXTURE = Path(__file__).parent / "data" / "authors_dualunet_fixture.pt"


def test_authors_key_layout_for_paper_small():
    with torch.device("meta"):
        keys = set(EDMPrecond(DualUNet(get_arch("paper-small"))).state_dict())
    assert set(AUTHOR_KEYS) <= keys


def test_import_checkpoint_reproduces_the_authors_network(run_cli, tmp_path):
    """The authors' own DualUNet (state dict and outputs from their code, tests/data/README.md),
    imported by `bench import-checkpoint`: every output at 16-64 px, odd multiples of 4
    included, within 1e-5 (measured: 0.0)."""
    fx = torch.load(FIXTURE, weights_only=True)
    torch.save(fx["state_dict"], tmp_path / "authors.pt")
    (tmp_path / "arch.json").write_text(json.dumps(fx["arch"]))
    code, out, err = run_cli("import-checkpoint", str(tmp_path / "authors.pt"), "--arch", str(tmp_path / "arch.json"),
                             "--out", str(tmp_path / "dfu.safetensors"))
    assert code == 0, err
    net = models.load(tmp_path / "dfu.safetensors")
    assert sorted(fx["io"]) == [16, 20, 24, 28, 32, 40, 48, 64]
    for res, io in fx["io"].items():
        with torch.no_grad():
            y = net(io["x"], io["sigma"])
        assert (y - io["y"]).abs().max().item() <= 1e-5, res


def test_the_complex_product_is_not_the_authors(tmp_path):
    """The ablation option really computes something else on the authors' weights."""
    from models.convert import from_authors_state_dict
    from models.networks import ArchConfig

    fx = torch.load(FIXTURE, weights_only=True)
    net = from_authors_state_dict(fx["state_dict"], ArchConfig.from_dict({**fx["arch"], "spectral_product": "complex"}))
    io = fx["io"][32]
    with torch.no_grad():
        assert (net(io["x"], io["sigma"]) - io["y"]).abs().max().item() > 1e-2


def test_checkpoints_without_a_product_are_complex():
    """Checkpoints written before spectral_product existed were computed with the complex product."""
    from models.networks import ArchConfig

    data = get_arch("cpu-tiny").to_dict()
    del data["spectral_product"]
    assert ArchConfig.from_checkpoint(data).spectral_product == "complex"
    assert ArchConfig.from_dict(data).spectral_product == "componentwise"


def test_import_checkpoint_rejects_mismatch_in_one_line(run_cli, tmp_path):
    arch = get_arch("cpu-tiny")
    sd = authors_state_dict(arch)
    del sd["model.enc.0_conv.spectral_conv.weights1"]
    torch.save(sd, tmp_path / "bad.pt")
    code, _, err = run_cli("import-checkpoint", str(tmp_path / "bad.pt"), "--arch", "cpu-tiny",
                           "--out", str(tmp_path / "x.safetensors"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1 missing" in err and "enc.0_conv.spectral_conv.weights1" in err
    assert not (tmp_path / "x.safetensors").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli("import-checkpoint", str(tmp_path / "junk.pt"), "--arch", "cpu-tiny",
                           "--out", str(tmp_path / "x.safetensors"))
    assert code == 2 and "not a readable state dict" in err


NONSQUARE = Path(__file__).parent / "data" / "authors_dualunet_nonsquare.pt"


def test_non_square_outputs_match_the_authors_and_mixed_parity_runs():
    """Deliberate difference 1: the authors' code crashes when height and width differ in
    parity (its upsampling restores one odd/even size for both sides); ours restores each
    side exactly. Where theirs runs (same parity), outputs are equal."""
    from models.convert import from_authors_state_dict
    from models.networks import ArchConfig

    fx = torch.load(FIXTURE, weights_only=True)
    extra = torch.load(NONSQUARE, weights_only=True)
    net = from_authors_state_dict(fx["state_dict"], ArchConfig.from_dict(fx["arch"]))
    for shape, io in extra["io"].items():
        with torch.no_grad():
            assert (net(io["x"], io["sigma"]) - io["y"]).abs().max().item() <= 1e-5, shape
    for shape in extra["crashes"]:
        with torch.no_grad():
            assert net(torch.randn(1, 3, *shape), torch.tensor([1.0])).shape == (1, 3, *shape)


def test_grids_too_small_for_the_modes_are_refused():
    """Deliberate difference 2: below 2 x modes1 rows the two kept row bands overlap; the
    authors' code writes the second over the first without a word, ours refuses."""
    from models.convert import from_authors_state_dict
    from models.networks import ArchConfig, resolution_problem

    fx = torch.load(FIXTURE, weights_only=True)
    arch = ArchConfig.from_dict(fx["arch"])  # level 0 keeps modes1 = 6: needs >= 12 rows
    net = from_authors_state_dict(fx["state_dict"], arch)
    assert resolution_problem(arch, 12) is None
    assert "too coarse for its spectral modes" in resolution_problem(arch, 10)
    with pytest.raises(ValueError, match="too coarse for its spectral modes"):
        net(torch.randn(1, 3, 10, 10), torch.tensor([1.0]))
