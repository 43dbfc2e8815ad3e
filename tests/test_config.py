from dataclasses import dataclass, field

import pytest

from ubp.config import as_dict, build
from ubp.io import UbpError


@dataclass(frozen=True)
class Inner:
    norm: str = "none"


@dataclass(frozen=True)
class Sample:
    hidden: int = 128
    lr: float = 1e-3
    standardize: bool = True
    fit_clients: int | None = None
    windows: tuple[int, ...] = (7, 14)
    dims: dict[str, int] = field(default_factory=dict)
    inner: Inner = Inner()


def test_defaults_and_values():
    cfg = build(Sample, {"hidden": 512, "lr": 1, "windows": [1, 2], "dims": {"sku": 4}, "method": "x"}, "models.s")
    assert (cfg.hidden, cfg.lr, cfg.windows, dict(cfg.dims)) == (512, 1.0, (1, 2), {"sku": 4})
    assert isinstance(cfg.lr, float) and cfg.standardize is True and cfg.fit_clients is None
    assert as_dict(cfg)["windows"] == [1, 2]


def test_unknown_key_names_section_and_close_match():
    with pytest.raises(UbpError, match=r"unknown key 'model\.hiden'.*did you mean 'hidden'"):
        build(Sample, {"hiden": 512}, "models.s", origin={"hiden": "model"})


@pytest.mark.parametrize("key,value,expected", [
    ("hidden", "512", "an integer"), ("hidden", True, "an integer"), ("hidden", 1.5, "an integer"),
    ("lr", "fast", "a number"), ("standardize", 1, "true or false"),
    ("fit_clients", 1.0, "an integer or null"), ("windows", [1, "a"], "a list of integers"),
    ("dims", {"sku": "x"}, "a mapping"),
])
def test_wrong_type_names_key_and_type(key, value, expected):
    with pytest.raises(UbpError, match=rf"models\.s\.{key} must be {expected}"):
        build(Sample, {key: value}, "models.s")


def test_nested_config_checked():
    assert build(Sample, {"inner": {"norm": "l2"}}, "s").inner == Inner("l2")
    with pytest.raises(UbpError, match="unknown key 's.inner.nrom'"):
        build(Sample, {"inner": {"nrom": "l2"}}, "s")
