"""Run config: the paper's ViT-S defaults and rejection of impossible settings by field name."""

import pytest

from featnorm.config import ConfigError, RunConfig, load_run_config, run_config_from_dict, validate


def test_defaults_are_the_paper_vit_s_and_validate():
    cfg = RunConfig()
    validate(cfg)
    e, p, o = cfg.model.encoder, cfg.model.predictor, cfg.model.objective
    assert (e.dim, e.depth, e.num_heads, e.head_dim, e.mlp_ratio) == (384, 12, 6, 64, 4.0)
    assert (p.dim, p.depth, p.num_heads) == (256, 6, 4)
    assert cfg.model.patch_dim == 768 and cfg.model.window_size == 2
    assert e.pos_embed == "rope" and e.rope_base == 10000 and e.max_grid_size == 64
    assert (o.batch_repeat, o.context_capacity, o.target_capacity, o.smooth_l1_beta) == (4, 0.25, 0.25, 1.0)
    assert o.target_norm_beta == 0.99 and e.dyntanh.alpha == "vector" and e.dyntanh.alpha_init == 0.5


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"model": {"encoder": {"dim": 384, "num_heads": 5}}}, "model.encoder.dim"),
        ({"model": {"encoder": {"dim": 30, "num_heads": 2}}}, "head dim 15"),
        ({"model": {"predictor": {"dim": 24, "num_heads": 4}}}, "model.predictor"),  # head dim 6: RoPE needs 4 | hd
        ({"model": {"objective": {"context_capacity": 0.0}}}, "model.objective.context_capacity"),
        ({"model": {"objective": {"target_capacity": 1.5}}}, "model.objective.target_capacity"),
        ({"model": {"objective": {"batch_repeat": 0}}}, "model.objective.batch_repeat"),
        (
            {"model": {"objective": {"target_with_replacement": False, "batch_repeat": 4, "target_capacity": 0.5}}},
            "model.objective.target_capacity = 0.5 x batch_repeat = 4 exceeds 1",
        ),
        (
            {"model": {"objective": {"context_with_replacement": False, "batch_repeat": 4, "context_capacity": 0.5}}},
            "set context_with_replacement: true",
        ),
        ({"model": {"objective": {"predict_registers": True}}}, "needs targets_include_context"),
        ({"model": {"init": "xavier"}}, "model.init"),
        ({"train": {"weight_decay_params": "some"}}, "train.weight_decay_params"),
        ({"model": {"objective": {"target_norm_beta": 1.0}}}, "target_norm_beta"),
        ({"model": {"objective": {"target_norm": "rmsnorm"}}}, "model.objective.target_norm"),
        ({"model": {"encoder": {"out_norm": "groupnorm"}}}, "model.encoder.out_norm"),
        ({"model": {"encoder": {"moe": {"capacity": 0.0}}}}, "model.encoder.moe.capacity"),
        ({"model": {"encoder": {"tome": {"ratio": 1.0}}}}, "model.encoder.tome.ratio"),
        ({"model": {"encoder": {"num_registers": -1}}}, "model.encoder.num_registers"),
        ({"model": {"predictor": {"rope_base": 0.0}}}, "model.predictor.rope_base"),
        ({"model": {"encoder": {"qk_nrom": "layernorm"}}}, "qk_nrom"),
        ({"train": {"steps": 100, "snapshot_steps": [50, 150]}}, "train.snapshot_steps"),
        ({"train": {"snapshot_steps": [20, 10]}}, "train.snapshot_steps"),
        ({"train": {"snapshot_steps": [0, 10]}}, "train.snapshot_steps"),
        ({"train": {"snapshot_steps": [10, 10.5]}}, r"train.snapshot_steps[1]"),
        ({"train": {"snapshot_steps": 10}}, "train.snapshot_steps must be a list"),
        ({"data": {"packing": "next-fit"}}, "data.packing"),
        ({"data": {"packing_rebalance": True}}, "data.packing_rebalance: true needs data.packing: best-fit"),
        # 256 px + 32 px for elongated images = 18 patches of 16 px
        ({"model": {"encoder": {"pos_embed": "absolute", "max_grid_size": 17}}}, "model.encoder.max_grid_size = 17"),
        ({"model": {"predictor": {"pos_embed": "absolute", "max_grid_size": 17}}}, "model.predictor.max_grid_size"),
    ],
)
def test_impossible_settings_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        run_config_from_dict(overrides)


def test_data_packing_settings_that_work_are_accepted():
    assert run_config_from_dict({}).data.packing == "first-fit"  # the reference's online first fit
    cfg = run_config_from_dict({"data": {"packing": "best-fit", "packing_rebalance": True}})
    assert cfg.data.packing_rebalance
    cfg = run_config_from_dict({"model": {"encoder": {"pos_embed": "absolute", "max_grid_size": 18}}})
    assert cfg.model.encoder.max_grid_size == 18


def test_without_replacement_is_accepted_when_the_draws_fit():
    cfg = run_config_from_dict(
        {"model": {"objective": {"context_with_replacement": False, "target_with_replacement": False, "batch_repeat": 4}}}
    )
    assert cfg.model.objective.context_capacity * 4 <= 1


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  encoder:\n    num_heads: 7\n")
    with pytest.raises(ConfigError, match="run.yaml"):
        load_run_config(path)
    path.write_text("model:\n  encoder:\n    out_norm: batchnorm\n    out_norm_affine: true\n")
    cfg = load_run_config(path)
    assert cfg.model.encoder.out_norm == "batchnorm" and cfg.model.encoder.dim == 384


def test_model_options_of_issue_8_are_built_from_the_run_config():
    from featnorm.ijepa import IJEPA
    from featnorm.layers import DiffMoE

    cfg = run_config_from_dict({"model": {
        "encoder": {"dim": 16, "depth": 1, "num_heads": 2, "num_registers": 2, "moe": {"num_experts": 4}},
        "predictor": {"dim": 16, "depth": 1, "num_heads": 2, "num_registers": 3, "encoder_registers": "wipe",
                      "tome": {"ratio": 0.1}},
    }})
    model = IJEPA(cfg.model)
    assert isinstance(model.student.blocks[0].mlp, DiffMoE) and model.student.blocks[0].mlp.num_experts == 4
    assert model.predictor.registers.shape == (3, 16)
    assert model.predictor.cfg.tome.ratio == 0.1 and model.predictor.cfg.encoder_registers == "wipe"


def test_snapshot_steps_are_a_list_of_any_length_that_survives_yaml(tmp_path):
    from featnorm.config import save_run_config

    cfg = run_config_from_dict({"train": {"steps": 400, "snapshot_steps": [50, 100, 400]}})
    assert cfg.train.snapshot_steps == (50, 100, 400)
    save_run_config(cfg, tmp_path / "run.yaml")
    assert load_run_config(tmp_path / "run.yaml") == cfg
    assert run_config_from_dict({}).train.snapshot_steps == ()
