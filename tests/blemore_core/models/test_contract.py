"""Contract tests over every registered fusion, head, pooling and baseline arch (docs/ARCHITECTURE.md section 9).

The parametrisation iterates the registries, so a newly registered block is tested automatically: output
shapes, finite values, probability rows summing to 1, a gradient for every trainable parameter from one
backward of compute_loss, and padded frames (mask False) never changing the output in eval mode.
"""

import dataclasses
import itertools

import pytest
import torch

from blemore_core.config import Config, ModelConfig, RegConfig
from blemore_core.labels import NUM_EMOTIONS
from blemore_core.losses import compute_loss
from blemore_core.models import ARCH, FUSION, HEAD, POOLING, ModelOutput, build_model
from blemore_core.models.fusion import ConcatFusion, RankAwareFusion

torch.set_num_threads(1)
ENCODERS = ("imagebind", "wavlm", "openface")
DIMS = {"imagebind": 12, "wavlm": 10, "openface": 5}
B, L = 8, 6
TARGET = torch.tensor([
    [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0.7, 0.3, 0, 0, 0, 0], [0, 0.3, 0, 0.7, 0, 0],
    [0, 0, 0.5, 0, 0.5, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0.7, 0.3, 0], [0, 0, 0, 0, 1, 0],
], dtype=torch.float32)

SEQUENCE_CASES = [("sequence", f, h, p) for f, h, p in itertools.product(FUSION.names(), HEAD.names(), POOLING.names())]
AGGREGATED_CASES = [("aggregated", f, h, "stat") for f, h in itertools.product(FUSION.names(), HEAD.names())]


def make_cfg(features="sequence", fusion="concat", head="softmax", pooling="attention", arch="fusion", top_n=2,
             **reg):
    return Config.from_dict({
        "data": {"encoders": list(ENCODERS), "features": features},
        "model": {"arch": arch, "fusion": fusion, "head": head, "pooling": pooling, "latent_dim": 8,
                  "shared_dim": 8, "heads": 2, "layers": 1, "seq_len": L, "top_n": top_n},
        "loss": {"kl": 1.0, "bce": 0.5, "rank": 0.5, "domain": 0.1},
        "reg": {"dropout": 0.1, **reg},
    })


def make_inputs(features, seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    if features == "aggregated":
        return {e: torch.randn(b, 7 * DIMS[e], generator=g) for e in ENCODERS}, None
    x = {e: torch.randn(b, L, DIMS[e], generator=g) for e in ENCODERS}
    m = {e: torch.rand(b, L, generator=g) > 0.3 for e in ENCODERS}
    m["imagebind"][0] = False  # one clip with no real imagebind frame
    m["wavlm"][1] = False
    m["wavlm"][1, 2] = True  # a single real frame
    return x, m


def dims_for(features):
    return {e: (7 * d if features == "aggregated" else d) for e, d in DIMS.items()}


def build(cfg):
    torch.manual_seed(0)
    return build_model(cfg, dims_for(cfg.data.features))


def check_output(out: ModelOutput, cfg, b=B):
    assert out.logits.shape == (b, NUM_EMOTIONS) and out.probs.shape == (b, NUM_EMOTIONS)
    assert out.embedding.shape[0] == b and out.embedding.dim() == 2
    for name in ("logits", "probs", "embedding"):
        assert torch.isfinite(getattr(out, name)).all(), name
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(b), atol=1e-5, rtol=0)
    assert (out.probs >= 0).all()
    if cfg.model.arch != "fusion":
        return
    if cfg.model.head == "presence_salience" and not out.aux:
        assert out.presence_logits.shape == (b, 6) and out.salience_logits.shape == (b, 6)
    if cfg.model.head == "structured" and not out.aux:
        assert out.set_logits.shape == (b, 16) and out.ratio_logits.shape == (b, 3)
        assert out.pair_ratio_logits.shape == (b, 10, 3)
    if cfg.model.fusion == "rank_aware":
        assert out.importances.shape == (b, len(ENCODERS))
    else:
        assert out.importances is None


def backward_once(model, cfg, features):
    x, m = make_inputs(features)
    xt, mt = make_inputs(features, seed=1)
    model.train()
    out = model(x, m)
    target_emb = model(xt, mt).embedding
    loss, parts = compute_loss(out, TARGET, cfg.loss, target_emb)
    assert torch.isfinite(loss) and set(parts) >= {"bce", "rank", "domain", "total"}
    model.zero_grad(set_to_none=True)
    loss.backward()
    return out


def assert_all_trainable_have_grad(model):
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"


@pytest.mark.parametrize("features,fusion,head,pooling", SEQUENCE_CASES + AGGREGATED_CASES)
def test_fusion_model_contract(features, fusion, head, pooling):
    cfg = make_cfg(features, fusion, head, pooling, modality_dropout=0.2, temporal_dropout=0.2)
    model = build(cfg)
    assert model.encoders == ENCODERS
    out = backward_once(model, cfg, features)
    check_output(out, cfg)
    assert_all_trainable_have_grad(model)
    model.eval()
    x, m = make_inputs(features)
    check_output(model(x, m), cfg)


@pytest.mark.parametrize("features,fusion,head,pooling", SEQUENCE_CASES)
def test_padded_frames_never_change_output(features, fusion, head, pooling):
    cfg = make_cfg(features, fusion, head, pooling, modality_dropout=0.5, temporal_dropout=0.5)
    model = build(cfg).eval()
    if fusion == "mixed":
        model.set_stage("combine")
    x, m = make_inputs(features)
    x2 = {e: torch.where(m[e][..., None], x[e], 50 * torch.randn_like(x[e])) for e in ENCODERS}
    a, b = model(x, m), model(x2, m)
    for name in ("probs", "logits", "embedding", "importances"):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5, msg=name)
    # appending masked frames must not change anything either (attention / recurrence never see them)
    x3 = {e: torch.cat([x[e], torch.randn(B, 3, DIMS[e])], dim=1) for e in ENCODERS}
    m3 = {e: torch.cat([m[e], torch.zeros(B, 3, dtype=torch.bool)], dim=1) for e in ENCODERS}
    c = model(x3, m3)
    for name in ("probs", "embedding", "importances"):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(c, name), atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("arch", ARCH.names())
def test_baseline_contract(arch):
    cfg = make_cfg("aggregated", arch=arch, modality_dropout=0.2)
    model = build(cfg)
    out = backward_once(model, cfg, "aggregated")
    check_output(out, cfg)
    assert_all_trainable_have_grad(model)


def test_linear_baseline_is_the_organisers_linear():
    model = build(make_cfg("aggregated", arch="linear")).eval()
    x, _ = make_inputs("aggregated")
    flat = torch.cat([x[e] for e in ENCODERS], dim=1)
    (fc,) = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert fc.in_features == sum(7 * d for d in DIMS.values()) and fc.out_features == 6
    torch.testing.assert_close(model(x, None).probs, torch.softmax(fc(flat), dim=1))


@pytest.mark.parametrize("arch,hidden", [("mlp256", 256), ("mlp512", 512)])
def test_mlp_baseline_layout(arch, hidden):
    model = build(make_cfg("aggregated", arch=arch))
    kinds = [type(m).__name__ for m in model.modules() if type(m).__name__ in ("Linear", "ReLU", "Dropout")]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.fc.in_features == hidden


def test_baseline_rejects_sequence_features():
    cfg = make_cfg("aggregated", arch="linear")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, features="sequence"))
    with pytest.raises(ValueError, match="needs data.features='aggregated'"):
        build_model(cfg, DIMS)


def test_missing_input_dims_and_inputs_raise():
    cfg = make_cfg()
    with pytest.raises(ValueError, match=r"input_dims lacks encoders \['openface'\]"):
        build_model(cfg, {"imagebind": 12, "wavlm": 10})
    model = build(cfg)
    x, m = make_inputs("sequence")
    del x["wavlm"]
    with pytest.raises(ValueError, match=r"inputs lack encoders \['wavlm'\]"):
        model(x, m)


# ---------------------------------------------------------------------------------------------- mixed stages
@pytest.mark.parametrize("head", HEAD.names())
@pytest.mark.parametrize("features", ["sequence", "aggregated"])
def test_mixed_stages(head, features):
    cfg = make_cfg(features, "mixed", head, "attention")
    model = build(cfg)
    assert model.stage == "pretrain"
    out = backward_once(model, cfg, features)
    assert len(out.aux) == 2
    combiner_and_head = [p for mod in (model.fusion.combiner, model.head) for p in mod.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in combiner_and_head)
    assert_all_trainable_have_grad(model)

    model.set_stage("combine")
    model.train()
    frozen = [mod for mod in (model.fusion.concat, model.fusion.attention, model.aux_heads)]
    assert all(not mod.training for f in frozen for mod in f.modules())  # dropout off in frozen branches
    out = backward_once(model, cfg, features)
    assert out.aux == ()
    assert all(p.grad is None and not p.requires_grad for f in frozen for p in f.parameters())
    assert all(p.requires_grad for p in combiner_and_head)
    assert_all_trainable_have_grad(model)
    check_output(out, cfg)

    model.set_stage("pretrain")
    assert all(p.requires_grad for f in frozen for p in f.parameters())
    with pytest.raises(ValueError, match="stage must be one of"):
        model.set_stage("finetune")


def test_stage_travels_in_state_dict():
    cfg = make_cfg("aggregated", "mixed")
    model = build(cfg)
    model.set_stage("combine")
    fresh = build(cfg)
    assert fresh.stage == "pretrain"
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # the trainer copies tensors only
    fresh.load_state_dict(state)
    assert fresh.stage == "combine" and not any(p.requires_grad for p in fresh.fusion.concat.parameters())
    x, _ = make_inputs("aggregated")
    torch.testing.assert_close(fresh.eval()(x, None).probs, model.eval()(x, None).probs)


def test_set_stage_is_noop_for_other_fusions():
    model = build(make_cfg())
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_stage("combine")
    assert before == {n: p.requires_grad for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------- rank-aware
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("features", ["sequence", "aggregated"])
def test_rank_aware_uses_exactly_top_n_encoders(k, features):
    model = build(make_cfg(features, "rank_aware", top_n=k)).eval()
    x, m = make_inputs(features)
    imp = model(x, m).importances
    assert ((imp > 0).sum(dim=1) == k).all()
    torch.testing.assert_close(imp.sum(dim=1), torch.ones(B))


@pytest.mark.parametrize("k", [0, 4, -1])
def test_rank_aware_top_n_out_of_range_raises(k):
    with pytest.raises(ValueError, match=rf"model.top_n must be in 1..3 .* got {k}"):
        RankAwareFusion(DIMS, encoders=ENCODERS, features="sequence", model=ModelConfig(top_n=k), reg=RegConfig())


def test_rank_aware_respects_modality_dropout():
    fusion = RankAwareFusion(DIMS, encoders=ENCODERS, features="sequence",
                             model=ModelConfig(top_n=3, latent_dim=8, shared_dim=8, heads=2), reg=RegConfig())
    x, m = make_inputs("sequence")
    keep = torch.ones(B, 3, dtype=torch.bool)
    keep[:, 1] = False
    imp = fusion.eval()(x, m, keep).importances
    assert (imp[:, 1] == 0).all() and ((imp > 0).sum(1) == 2).all()


# ---------------------------------------------------------------------------------------------- regularisation
def test_modality_dropout_zeroes_concat_branch():
    fusion = ConcatFusion(DIMS, encoders=ENCODERS, features="sequence",
                          model=ModelConfig(latent_dim=8, heads=2), reg=RegConfig()).eval()
    x, m = make_inputs("sequence")
    keep = torch.ones(B, 3, dtype=torch.bool)
    keep[2, 0] = False
    emb = fusion(x, m, keep).embedding
    assert torch.equal(emb[2, :8], torch.zeros(8)) and emb[3, :8].abs().sum() > 0


def test_training_with_heavy_dropout_stays_finite():
    for fusion in FUSION.names():
        cfg = make_cfg("sequence", fusion, "softmax", "bilstm", top_n=1, modality_dropout=0.9, temporal_dropout=0.9)
        model = build(cfg).train()
        x, m = make_inputs("sequence")
        out = model(x, m)
        assert torch.isfinite(out.probs).all(), fusion


def test_eval_is_deterministic_and_train_is_stochastic():
    model = build(make_cfg(modality_dropout=0.5, temporal_dropout=0.5))
    x, m = make_inputs("sequence")
    model.eval()
    torch.testing.assert_close(model(x, m).probs, model(x, m).probs)
    model.train()
    assert not torch.allclose(model(x, m).probs, model(x, m).probs)


def test_heads_not_dividing_width_raise():
    cfg = make_cfg(fusion="attention")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, heads=3))
    with pytest.raises(ValueError, match="model.heads=3 must be >= 1 and divide the transformer width 8"):
        build(cfg)
