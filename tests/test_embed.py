"""The embed stage's checks on what a method returns, and its atomic, skippable outputs."""
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ubp import embed as embed_stage
from ubp import profile_store as store
from ubp.features.build import FeaturesConfig
from ubp.io import UbpError
from ubp.models import random, rcae
from ubp.models.base import EmbedContext, ProfileUnavailable
from ubp.sequences import SequencesConfig

CTX = EmbedContext(
    client_ids=np.array([5, 3, 9], dtype=np.int64),
    events_dir=Path("unused"),
    properties_path=Path("unused"),
    cutoff=datetime(2022, 1, 1),
)


class FakeMethod:
    def __init__(self, matrix):
        self.matrix = matrix

    def embed(self, ctx, cfg):
        if isinstance(self.matrix, Exception):
            raise self.matrix
        return self.matrix


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.zeros((2, 4)), "shape (2, 4), expected (3, d)"),
        (np.zeros(3), "shape (3,)"),
        (np.zeros((3, 2049)), "2049 dimensions, the limit is 2048"),
        (np.array([[0.0, np.nan]] * 3), "NaN or inf"),
        (np.full((3, 2), 1e6), "beyond float16's range"),
    ],
)
def test_compute_rejects_bad_method_output(monkeypatch, matrix, message):
    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(matrix))
    with pytest.raises(UbpError) as err:
        embed_stage.compute("p", random.Config(), CTX)
    assert message in str(err.value)


def test_compute_returns_float16(monkeypatch):
    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(np.ones((3, 2))))
    out = embed_stage.compute("p", random.Config(), CTX)
    assert out.dtype == np.float16 and out.shape == (3, 2)


def test_standardize_setting_centres_and_scales_each_column(monkeypatch):
    raw = np.array([[1.0, 7.0, 0.5], [3.0, 7.0, 0.5], [5.0, 7.0, 2.0]])
    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(raw))
    out = embed_stage.compute("p", rcae.Config(standardize=True), CTX).astype(np.float64)
    # column 0: mean 3, sd sqrt(8/3); column 1 constant -> only centred; column 2: mean 1, sd sqrt(0.5)
    a, b = 2 / np.sqrt(8 / 3), 0.5 / np.sqrt(0.5)
    expected = np.array([[-a, 0.0, -b], [0.0, 0.0, -b], [a, 0.0, 2 * b]])
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert np.array_equal(embed_stage.compute("p", rcae.Config(standardize=False), CTX), raw.astype(np.float16))
    with pytest.raises(UbpError, match="NaN or inf"):  # standardising never hides a bad value
        monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(np.array([[0.0, np.nan]] * 3)))
        embed_stage.compute("p", rcae.Config(standardize=True), CTX)


def test_write_profile_replaces_whole_directory(tmp_path):
    out = tmp_path / "embeddings" / "p"
    store.write_skipped(out, "not here")
    assert (out / "SKIPPED.txt").read_text() == "not here\n"
    store.write(out, CTX.client_ids, {"profile": "p"}, np.ones((3, 2), np.float16))
    assert sorted(p.name for p in out.iterdir()) == ["client_ids.npy", "embeddings.npy", "meta.json"]
    assert np.load(out / "client_ids.npy").tolist() == [5, 3, 9]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_unavailable_profile_is_skipped_not_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(ProfileUnavailable("synthetic only")))
    monkeypatch.setattr(embed_stage, "local_context", lambda **kw: CTX)
    params = {"embedding": {}, "models": {"oracle": {"method": "oracle", "inherits": "embedding"}}}
    embed_stage.run("oracle", params, out_dir=tmp_path / "oracle")
    assert (tmp_path / "oracle" / "SKIPPED.txt").read_text().strip() == "synthetic only"


def test_outputs_get_ordinary_permissions(tmp_path):
    from ubp.io import save_json

    save_json(tmp_path / "m.json", {"a": 1})
    store.write_skipped(tmp_path / "p", "x")
    assert (tmp_path / "m.json").stat().st_mode & 0o044 == 0o044  # group/other can read
    assert (tmp_path / "p").stat().st_mode & 0o055 == 0o055


def test_training_curve_and_info_are_saved(monkeypatch, tmp_path):
    class Curved:
        def embed(self, ctx, cfg):
            ctx.info["curve"] = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]
            ctx.info["best_epoch"] = 2
            return np.ones((3, 2))

    ctx = EmbedContext(CTX.client_ids, CTX.events_dir, CTX.properties_path, CTX.cutoff)
    monkeypatch.setattr(embed_stage, "get_method", lambda name: Curved())
    monkeypatch.setattr(embed_stage, "local_context", lambda **kw: ctx)
    params = {"model": {}, "models": {"nn": {"method": "dcn", "inherits": "model"}}}
    embed_stage.run("nn", params, out_dir=tmp_path / "nn")
    assert (tmp_path / "nn" / "training_curve.csv").read_text() == "epoch,train_loss\n1,0.5\n2,0.25\n"
    assert '"best_epoch": 2' in (tmp_path / "nn" / "meta.json").read_text()


def test_wall_times_stay_out_of_the_profile_directory(monkeypatch, tmp_path):
    """A re-run on the same inputs writes the same bytes: the curve's per-epoch seconds and the
    stage's time go to the timing metric, not to meta.json or training_curve.csv."""
    runs = iter([(7.5, 8.25), (0.5, 0.75)])

    class Timed:
        def embed(self, ctx, cfg):
            first, second = next(runs)
            ctx.info["curve"] = [{"epoch": 1, "train_loss": 0.5, "seconds": first},
                                 {"epoch": 2, "train_loss": 0.25, "seconds": second}]
            return np.ones((3, 2))

    monkeypatch.setattr(embed_stage, "get_method", lambda name: Timed())
    params = {"model": {}, "models": {"nn": {"method": "dcn", "inherits": "model"}}}
    outputs = []
    for run_dir in ("a", "b"):
        ctx = EmbedContext(CTX.client_ids, CTX.events_dir, CTX.properties_path, CTX.cutoff)
        monkeypatch.setattr(embed_stage, "local_context", lambda **kw: ctx)
        embed_stage.run("nn", params, out_dir=tmp_path / run_dir / "nn", timing=tmp_path / run_dir / "nn.json")
        outputs.append({f.name: f.read_bytes() for f in sorted((tmp_path / run_dir / "nn").iterdir())})
    assert outputs[0] == outputs[1]
    assert outputs[0]["training_curve.csv"] == b"epoch,train_loss\n1,0.5\n2,0.25\n"
    assert b"seconds" not in outputs[0]["meta.json"]
    timing = json.loads((tmp_path / "a" / "nn.json").read_text())
    assert timing["epoch_seconds"] == [7.5, 8.25] and timing["profile"] == "nn" and timing["seconds"] >= 0
    assert json.loads((tmp_path / "b" / "nn.json").read_text())["epoch_seconds"] == [0.5, 0.75]


def test_context_takes_params_features_and_sequences_sections(monkeypatch, tmp_path):
    """Stored or recomputed, features and sequences follow their stages' params sections, not the profile's."""
    seen, real_context = {}, embed_stage.local_context

    def context(**kw):
        seen.update(kw)
        return CTX

    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(np.ones((3, 2))))
    monkeypatch.setattr(embed_stage, "local_context", context)
    params = {"features": {"windows": [7], "memory_limit": "1GB"}, "sequences": {"max_len": 8},
              "embedding": {}, "models": {"p": {"method": "random", "inherits": "embedding", "dim": 2}}}
    embed_stage.run("p", params, out_dir=tmp_path / "p")
    assert seen == {"sequence_settings": SequencesConfig(max_len=8),
                    "feature_settings": FeaturesConfig(windows=(7,), memory_limit="1GB")}
    split_dir, canonical_dir = tmp_path / "split", tmp_path / "canonical"
    split_dir.mkdir(), canonical_dir.mkdir()
    (split_dir / "split.json").write_text('{"train_target_start": "2022-01-01 00:00:00"}')
    (canonical_dir / "input").mkdir()
    np.save(canonical_dir / "input" / "relevant_clients.npy", CTX.client_ids)
    ctx = real_context(split_dir, canonical_dir, feature_settings=FeaturesConfig(windows=(7,)))
    assert ctx.feature_settings == FeaturesConfig(windows=(7,)) and ctx.sequence_settings == SequencesConfig()


def test_a_context_refuses_a_raw_params_dict_for_its_settings():
    with pytest.raises(TypeError, match="feature_settings must be a FeaturesConfig"):
        EmbedContext(client_ids=CTX.client_ids, events_dir=Path("."), properties_path=Path("p"),
                     cutoff=CTX.cutoff, feature_settings={"windows": [7]})
    with pytest.raises(TypeError, match="sequence_settings must be a SequencesConfig"):
        EmbedContext(client_ids=CTX.client_ids, events_dir=Path("."), properties_path=Path("p"),
                     cutoff=CTX.cutoff, sequence_settings={"max_len": 8})


@pytest.mark.parametrize("params, message", [
    ({"model": {"hiden": 512}}, r"unknown key 'model\.hiden'; did you mean 'hidden'"),
    ({"model": {"hidden": "512"}}, r"model\.hidden must be an integer, got '512'"),
    ({"model": {}, "models": {"dcn": {"method": "dcn", "inherits": "model", "hidden": 512, "dropuot": 0.1}}},
     r"unknown key 'models\.dcn\.dropuot'"),
])
def test_a_typo_or_a_wrong_type_stops_the_stage_before_any_work(monkeypatch, tmp_path, params, message):
    """`dvc exp run -S model.hiden=512` used to train every neural profile with the default width."""
    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(embed_stage, "local_context", no_work)
    monkeypatch.setattr(embed_stage, "get_method", no_work)
    params = {"models": {"dcn": {"method": "dcn", "inherits": "model"}}, **params}
    with pytest.raises(UbpError, match=message):
        embed_stage.run("dcn", params, out_dir=tmp_path / "dcn")
    assert not (tmp_path / "dcn").exists()


def test_meta_records_the_method_and_every_setting_it_ran_with(monkeypatch, tmp_path):
    import json

    monkeypatch.setattr(embed_stage, "get_method", lambda name: FakeMethod(np.ones((3, 2))))
    monkeypatch.setattr(embed_stage, "local_context", lambda **kw: CTX)
    params = {"embedding": {"seed": 3}, "models": {"noise": {"method": "random", "inherits": "embedding"}}}
    embed_stage.run("noise", params, out_dir=tmp_path / "noise")
    meta = json.loads((tmp_path / "noise" / "meta.json").read_text())
    assert meta["method"] == "random" and meta["config"] == {"seed": 3, "device": "cpu", "dim": random.Config().dim}
