"""`bench model-card`: parameter split and FLOPs without training; memory of one step."""
from __future__ import annotations

import json

from models.card import flops_per_forward
from models.networks import get_arch


def test_model_card_json_paper_small(run_cli):
    code, out, err = run_cli("model-card", "paper-small", "--resolutions", "32,64,30", "--json")
    assert code == 0, err
    card = json.loads(out)
    # the authors' counts with the 9-dim augmentation embedding their training used
    assert card["params_total"] == 630_576_131
    assert card["params_spectral"] + card["params_spatial"] == card["params_total"]
    assert card["params_spatial"] == 61_805_571  # the UNet is DFU without its spectral weights
    f = card["flops_per_forward"]
    assert set(f) == {"32", "64", "30"} and f["30"] is None  # 30 px is below paper-small's minimum
    assert 3.5 < f["64"] / f["32"] < 4.5  # convolutions scale with pixel count


def test_fft_flops_are_counted():
    dual, spatial = get_arch("cpu-tiny"), get_arch("cpu-tiny", mode="spatial")
    assert flops_per_forward(dual, 32) > flops_per_forward(spatial, 32) > 0


def test_model_card_memory_and_bad_arch(run_cli):
    code, out, err = run_cli("model-card", "cpu-tiny", "--resolutions", "16", "--memory-resolution", "16",
                             "--memory-batch", "2", "--device", "cpu")
    assert code == 0, err
    assert "training step at 16 px x 2" in out and "MiB" in out
    code, _, err = run_cli("model-card", "no-such-arch")
    assert code == 2 and "unknown architecture" in err


def test_model_card_names_the_spectral_product():
    """The complex product is an ablation: a card says which one a model computes."""
    from models.card import model_card
    from models.networks import ArchConfig

    assert model_card("cpu-tiny", [16])["spectral_product"] == "componentwise"
    ablation = ArchConfig.from_dict({**get_arch("cpu-tiny").to_dict(), "spectral_product": "complex"})
    assert model_card(ablation, [16])["spectral_product"] == "complex"
    assert model_card(get_arch("cpu-tiny", mode="spatial"), [16])["spectral_product"] is None
