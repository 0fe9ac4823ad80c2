"""Importing the authors' EDMPrecond state dict: key layout, strictness, identical outputs."""
from __future__ import annotations

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


def test_import_checkpoint_gives_same_denoiser(run_cli, tmp_path):
    arch = get_arch("cpu-tiny", augment_dim=9)
    sd = authors_state_dict(arch)
    for k in AUTHOR_KEYS:
        assert k in sd, k
    sd = {k: (torch.tensor([[[[0.25, 0.25], [0.25, 0.25]]]]) if k.endswith("resample_filter") else v)
          for k, v in sd.items()}
    torch.save(sd, tmp_path / "authors.pt")
    (tmp_path / "arch.json").write_text(__import__("json").dumps(arch.to_dict()))
    code, out, err = run_cli("import-checkpoint", str(tmp_path / "authors.pt"), "--arch", str(tmp_path / "arch.json"),
                             "--out", str(tmp_path / "dfu.safetensors"))
    assert code == 0, err
    net = models.load(tmp_path / "dfu.safetensors")
    reference = EDMPrecond(DualUNet(arch)).eval()
    reference.load_state_dict(sd)
    for res in (16, 24, 40):
        x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(res))
        sigma = torch.tensor([0.5, 3.0])
        with torch.no_grad():
            assert (net(x, sigma) - reference(x, sigma)).abs().max() <= 1e-4


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
