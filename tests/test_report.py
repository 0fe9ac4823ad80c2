"""The report's generated findings: `summarize` on hand-built aggregate frames."""
from __future__ import annotations

import pandas as pd

from bench.summary import summarize

MAPPING = {"dfu": "dfu", "unet-multires": "unet-multires"}


# --------------------------------------------------------------- summarize


def frame(values: dict[str, list], grid: list[int], adapters=None, train=None) -> pd.DataFrame:
    """A hand-built aggregate frame: model -> KID per resolution (None = missing)."""
    adapters = adapters or {}
    train = train or {}
    return pd.DataFrame([{"model": m, "adapter": adapters.get(m, {"dfu": "dfu"}.get(m, "unet")),
                          "train_resolutions": train.get(m, "16/24/32"), "sample_resolution": r, "kid": v,
                          "n": 80} for m, vs in values.items() for r, v in zip(grid, vs)])


def test_summarize_dfu_better_at_40_48_worse_at_64():
    agg = frame({"unet-multires": [0.30, 0.45, 0.44, 0.42], "dfu": [0.25, 0.40, 0.43, 0.61]}, [32, 40, 48, 64])
    s = summarize(agg, "kid")
    assert s[0] == ("Best trained model by KID (lower is better; N = 80 per point) at each sampled resolution: "
                    "32 px dfu (0.2500); 40 px dfu (0.4000); 48 px dfu (0.4300); 64 px unet-multires (0.4200).")
    assert s[1] == ("dfu vs unet-multires (both trained at 16/24/32 px) by KID, above 32 px: dfu is better at "
                    "40 px (dfu 0.4000, unet-multires 0.4500) and 48 px (dfu 0.4300, unet-multires 0.4400); "
                    "unet-multires is better at 64 px (dfu 0.6100, unet-multires 0.4200). "
                    "At or below 32 px dfu is better at 1 of 1 resolutions.")
    assert s[2].endswith("No trained model collapses under this rule; the largest ratio is 2.44x (dfu at 64 px).")
    assert len(s) == 3


def test_summarize_ties_print_equal():
    agg = frame({"unet-multires": [0.30, 0.43191], "dfu": [0.25, 0.43188]}, [32, 48])
    s = summarize(agg, "kid")
    assert "48 px unet-multires and dfu tied (0.4319)" in s[0]
    assert "above 32 px: they tie at 48 px (0.4319)." in s[1]


def test_summarize_names_missing_values():
    agg = frame({"unet-multires": [0.30, 0.40, 0.42], "dfu": [0.25, 0.38, None]}, [32, 48, 64])
    s = summarize(agg, "kid")
    assert "64 px unet-multires (0.4200)" in s[0]
    assert ("above 32 px: dfu is better at 48 px (dfu 0.3800, unet-multires 0.4000); "
            "not compared at 64 px (no value for dfu).") in s[1]
    # nothing at all at a resolution, and no value at the largest training resolution
    agg = frame({"unet-multires": [None, 0.40], "dfu": [None, 0.5]}, [32, 64])
    s = summarize(agg, "kid")
    assert "32 px no value" in s[0]
    assert "Not assessed: unet-multires (no KID at 32 px) and dfu (no KID at 32 px)." in s[-1]


def test_summarize_collapse_rule_is_strict_and_skips_bilinear():
    agg = frame({"dfu": [0.1, 0.3, 0.31], "up": [0.0001, 0.02, 0.03]}, [32, 48, 64], adapters={"up": "bilinear"},
                train={"up": "32"})
    s = summarize(agg, "kid")
    collapse = [x for x in s if x.startswith("Collapse rule")][0]
    assert "dfu collapses at 64 px (0.3100 = 3.1x its 0.1000 at 32 px)." in collapse
    assert "48 px" not in collapse  # exactly 3x is not more than 3x
    assert "up" not in collapse.split("resolution.", 1)[1]
    assert "Bilinear baseline up beats the best trained model at 32, 48 and 64 px." in s
    assert s[0].count("dfu") == 3  # a baseline is never the best trained model


def test_summarize_against_the_paper():
    from bench.paper import reference_frame

    agg = frame({"unet-multires": [0.30, 0.50, 0.40], "dfu": [0.25, 0.40, 0.45]}, [32, 96, 128],
                train={"unet-multires": "32/64/96", "dfu": "32/64/96"})
    agg["fid"] = agg["kid"] * 100
    agg["fid_mode"] = "clean"
    ref = reference_frame("lsun_church", MAPPING)
    s = summarize(agg, "kid", ref, MAPPING)
    assert ("Published numbers for lsun_church come from edm-fid (N=50k); ours from clean-fid clean mode "
            "(N = 80 per point)") in s[-3]
    assert s[-2] == ("Best trained model here, dfu, against paper: dfu (FID, ours vs theirs): "
                     "32 px 25.00 vs 1.31; 96 px 40.00 vs 3.43; 128 px 45.00 vs 4.86.")
    assert s[-1] == ("dfu vs unet-multires by FID at the resolutions both sources have (32, 96 and 128 px): "
                     "in the paper dfu is better at 32, 96 and 128 px; here dfu is better at 32 and 96 px; "
                     "the orderings agree at 2 of 3.")
    unmapped = summarize(agg, "kid", ref, {})
    assert "has no counterpart among the published models" in unmapped[-1]
