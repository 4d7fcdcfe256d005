"""Efficiency switches by config: each one does what it says on the real modules, and the ones a machine
cannot run are refused by RunConfig before anything is built."""
import lightning as L
import pytest
import torch

from walt.config import RunConfig
from walt.config.run import ALLOW_CPU_BF16
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.transformer.backbone import WALT
from walt.transformer.presets import preset_config
from walt.utils import cpu_has_native_bf16

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    return preset_config("walt_tiny", in_channels=4, num_classes=4, **overrides)


def inputs(cfg, batch=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, *cfg.input_size, generator=g)
    return x, torch.randint(0, 1000, (batch,), generator=g), torch.arange(batch) % cfg.num_classes


def test_backbone_traces_as_one_graph_without_breaks():
    """model.compile=true compiles the backbone: dynamo must capture its forward (self-conditioning input,
    the SDPA kernel context, activation checkpointing) in one graph, with no graph break."""
    cfg = tiny(sdpa_backend="math", grad_checkpointing=True)
    model = WALT(cfg)
    x, t, y = inputs(cfg)
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(model)(x, t, y, self_cond=torch.randn_like(x))
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_compile_flag_compiles_both_copies_in_place_and_keeps_checkpoint_keys():
    eager = LatentDiffusionModule(tiny())
    compiled = LatentDiffusionModule(tiny(compile=True))
    assert compiled.model._compiled_call_impl is not None and compiled.ema.module._compiled_call_impl is not None
    assert eager.model._compiled_call_impl is None
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # no _orig_mod. prefixes


@pytest.mark.slow
def test_compiled_backbone_matches_eager():
    """The compiled forward gives the eager output. The traced graph (dynamo + AOT autograd) is ours to get
    right; inductor's C++ code generation is torch's and took 78 s on the loaded 2-core machine, so the test compiles
    with the aot_eager backend (model.compile=true uses the default inductor backend)."""
    torch.manual_seed(0)
    model = WALT(tiny()).eval()
    x, t, y = inputs(tiny())
    with torch.no_grad():
        expected = model(x, t, y)
        model.compile(backend="aot_eager")
        got = model(x, t, y)
    torch._dynamo.reset()
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("backend", ["flash", "math"])
def test_sdpa_backend_choice_on_cpu_gives_the_same_output(backend):
    """CPU has flash and math kernels (both take our bias / image masks); the choice changes no output."""
    torch.manual_seed(0)
    ref = WALT(tiny()).eval()
    chosen = WALT(tiny(sdpa_backend=backend)).eval()
    chosen.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for p in ref.parameters():  # zero-initialised gates would hide the attention
            p.add_(0.05 * torch.randn_like(p))
        chosen.load_state_dict(ref.state_dict())
        x, t, y = inputs(tiny())
        assert torch.allclose(chosen(x, t, y), ref(x, t, y), atol=1e-5)


def test_sdpa_backend_names_valid_choices():
    with pytest.raises(ValueError, match="sdpa_backend='fast' is not one of"):
        tiny(sdpa_backend="fast")


def test_fused_adamw_matches_the_default_update_on_cpu(tmp_path):
    """optim.fused=true: torch's fused AdamW (available for CPU tensors too) gives the same weights as the
    default one after a few steps of the real module (measured difference ~1e-8)."""
    from torch.utils.data import DataLoader

    cfg = tiny()
    x = torch.randn(8, cfg.in_channels, *cfg.input_size, generator=torch.Generator().manual_seed(1))
    data = [{"latents": x[i], "label": i % 4, "noise": torch.randn_like(x[i]), "t": torch.tensor(100 * i)}
            for i in range(8)]
    weights = {}
    for fused in (False, True):
        L.seed_everything(0)
        module = LatentDiffusionModule(tiny(self_cond_prob=1.0, class_dropout_prob=0.0),
                                       optim={"lr": 1e-3, "warmup_steps": 0, "fused": fused})
        trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            default_root_dir=tmp_path)
        trainer.fit(module, DataLoader(data, batch_size=2))
        opt = trainer.optimizers[0]
        assert opt.defaults["fused"] is (True if fused else None)
        weights[fused] = module.state_dict()
    diff = max((weights[True][k] - weights[False][k]).abs().max().item() for k in weights[True])
    moved = max((weights[True][k] - v).abs().max().item() for k, v in LatentDiffusionModule(tiny()).state_dict().items()
                if k.startswith("model.") and "adaln" in k)
    assert diff < 1e-5 and moved > 1e-4


def test_bf16_on_a_cpu_without_native_bf16_is_refused(monkeypatch):
    monkeypatch.delenv(ALLOW_CPU_BF16, raising=False)
    if cpu_has_native_bf16():
        RunConfig.load(["trainer.precision=bf16-mixed"])  # this CPU computes bf16 natively: allowed
        pytest.skip("this CPU has native bf16 (avx512_bf16 / amx_bf16)")
    for precision in ("bf16-mixed", "bf16-true"):
        with pytest.raises(ValueError, match=rf"trainer.precision={precision} on a CPU without native bf16.*27x"):
            RunConfig.load([f"trainer.precision={precision}"])
    monkeypatch.setenv(ALLOW_CPU_BF16, "1")  # the explicit override, e.g. to check bf16 numerics
    assert RunConfig.load(["trainer.precision=bf16-mixed"]).trainer["precision"] == "bf16-mixed"
    # a GPU run composes anywhere (trainer=gpu is bf16-mixed); it only runs where CUDA is
    monkeypatch.delenv(ALLOW_CPU_BF16)
    assert RunConfig.load(["trainer=gpu"]).trainer["precision"] == "bf16-mixed"


def test_cpu_bf16_flag_detection(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_has_native_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(str(info))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize("overrides,message", [
    (["optim.fused=true", "trainer.precision=16-mixed", "trainer.gradient_clip_val=1.0", "trainer.accelerator=gpu"],
     "optim.fused=true with trainer.precision=16-mixed"),
    (["model.sdpa_backend=efficient"], "model.sdpa_backend=efficient is a CUDA kernel"),
    (["model.sdpa_backend=cudnn", "trainer.accelerator=cpu"], "CUDA kernel"),
    (["trainer=fsdp", "trainer.accelerator=cpu"], "trainer=fsdp needs CUDA GPUs"),
])
def test_switches_a_machine_cannot_run_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.load(overrides)


def test_switches_compose_where_they_can_run():
    run = RunConfig.load(["optim.fused=true", "model.compile=true", "model.sdpa_backend=math",
                          "model.grad_checkpointing=true"])
    assert run.optim.fused and run.model.compile and run.model.sdpa_backend == "math"
    assert RunConfig.load(["trainer=gpu", "model.sdpa_backend=efficient"]).model.sdpa_backend == "efficient"


def test_runs_stored_before_the_switches_existed_still_resume_and_reevaluate(tmp_path):
    from walt import runs
    from walt.pipeline.fit import check_resume

    run = RunConfig.load([f"paths.run_dir={tmp_path}", "run_name=old"])
    old = run.to_dict()
    for section, key in (("model", "compile"), ("model", "sdpa_backend"), ("optim", "fused")):
        del old[section][key]
    runs.write_config(tmp_path, old, list(run.overrides))
    assert RunConfig.stored(tmp_path).model == run.model  # re-evaluation
    check_resume(run, tmp_path / runs.CONFIG)  # resume: no "absent -> False" difference
    check_resume(run.with_overrides("model.compile=true", "optim.fused=true"), tmp_path / runs.CONFIG)
