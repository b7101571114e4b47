"""The authors' EBT (`EBT_NLP` of alexiglad/EBT, model/nlp/ebt.py) built from a checkout outside this
repository, for bench_throughput.py's side-by-side. Nothing of theirs is vendored or installed here:

    git -C <a clone of alexiglad/EBT> worktree add /tmp/authors-ebt HEAD     # their code, read-only use
    pip install --no-deps --target /tmp/authors-deps pytorch-lightning lightning-utilities torchmetrics \\
        transformers huggingface-hub safetensors regex                      # their imports, outside .venv
    .venv/bin/python benchmarks/bench_throughput.py --plain --authors-repo /tmp/authors-ebt \\
        --authors-deps /tmp/authors-deps

Their model modules import torchvision and diffusers at the top for the image and video models, which the NLP
EBT never calls: empty stand-ins satisfy those imports. Their package is named `model`, like ours, so it is
imported (and the model built: `setup_ebt` imports lazily) with ours set aside, then ours is put back.
`EBT_NLP.__init__` loads a tokenizer only for its length and EOS id: a local one with the wanted vocabulary is
written (id 0 = EOS, their pad id, which their loss ignores: the benchmark's tokens avoid it).
"""

from __future__ import annotations

import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

IMAGE_ONLY_IMPORTS = (
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.models",
    "torchvision.utils",
    "diffusers",
)


def system1_hparams(cfg: Any, micro_batch: int, tokenizer: Path) -> dict[str, Any]:
    """Their train_model.py defaults plus job_scripts/nlp/pretrain/ebt_s1.sh (System-1: time_embed, 2 steps,
    alpha 500 learnable, normalised initial condition, random-noise start, detach, no truncation), at the
    shape of our `cfg` with the FFN width matched (their hidden width is int(d * ffn_dim_multiplier))."""
    d = cfg.d_model
    assert int(d * (cfg.ff_dim / d)) == cfg.ff_dim, "FFN width not representable by their multiplier"
    return dict(
        tokenizer=str(tokenizer),
        embedding_dim=d,
        num_transformer_blocks=cfg.n_layers,
        multiheaded_attention_heads=cfg.n_heads,
        context_length=cfg.context_length,
        batch_size_per_device=micro_batch,
        ffn_dim_multiplier=cfg.ff_dim / d,
        # ebt_s1.sh
        normalize_initial_condition=True,
        ebt_type="time_embed",
        denoising_initial_condition="random_noise",
        mcmc_step_size_learnable=True,
        mcmc_step_size=500.0,
        mcmc_num_steps=2,
        # their defaults
        langevin_dynamics_noise=0.0,
        weight_initialization_method="xavier",
        weight_initialization_gain=1.0,
        vocab_to_embed_uses_prob_dist=False,
        num_modality_processing_mlp_layers=1,
        mcmc_replay_buffer=False,
        execution_mode="pretrain",
        debug_unused_parameters=False,
        ebt_norm="rms",
        ebt_act_func="silu",
        dyt_alpha_init=0.5,
        randomize_mcmc_step_size_scale=1,
        randomize_mcmc_num_steps=0,
        randomize_mcmc_num_steps_min=0,
        randomize_mcmc_num_steps_final_landscape=False,
        no_mcmc_detach=False,
        normalize_initial_condition_only_first_step=False,
        truncate_mcmc=False,
        clamp_futures_grad=False,
        absolute_clamp=0.0,
        sharpen_predicted_distribution=0.0,
        gaussian_random_noise_scaling=1.0,
        soften_target_prob_dist=0.0,
        contrastive_loss=False,
        reconstruction_coeff=1.0,
    )


def local_tokenizer(root: Path, vocab: int) -> Path:
    """A saved Hugging Face tokenizer with exactly `vocab` entries, id 0 the EOS token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    path = root / f"tokenizer-{vocab}"
    if not (path / "tokenizer.json").exists():
        words = {"<eos>": 0, **{f"t{i}": i for i in range(1, vocab)}}
        tok = Tokenizer(models.WordLevel(words, unk_token="<eos>"))
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(path)
    return path


def _ours() -> dict[str, types.ModuleType]:
    return {k: m for k, m in sys.modules.items() if k == "model" or k.startswith("model.")}


def load_authors_ebt(repo: Path, deps: Path | None, cfg: Any, micro_batch: int, workdir: Path) -> Any:
    """Their EBT_NLP at our cfg's shape and vocabulary, System-1 settings (see system1_hparams)."""
    if deps is not None and str(deps) not in sys.path:
        sys.path.append(str(deps))  # after the venv's own packages: torch, tokenizers stay ours
    import pytorch_lightning  # noqa: F401 - before the stand-ins, which must not look like torchvision to it
    import torchmetrics  # noqa: F401

    for name in IMAGE_ONLY_IMPORTS:
        sys.modules.setdefault(name, types.ModuleType(name))
    tv = sys.modules["torchvision"]
    tv.transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    tv.transforms.functional = sys.modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    tv.transforms.ToPILImage = object  # type: ignore[attr-defined]
    sys.modules["torchvision.utils"].make_grid = sys.modules["torchvision.utils"].save_image = None  # type: ignore[attr-defined]
    sys.modules["diffusers"].AutoencoderKL = object  # type: ignore[attr-defined]

    hparams = system1_hparams(cfg, micro_batch, local_tokenizer(workdir, cfg.vocab_size))
    ours = _ours()
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(repo))
    try:
        from model.nlp.ebt import EBT_NLP  # theirs

        return EBT_NLP(Namespace(**hparams))
    finally:
        sys.path.remove(str(repo))
        for name in _ours():
            del sys.modules[name]
        sys.modules.update(ours)


def authors_loss(model: Any, sequences: Any) -> Any:
    """Their training loss of (B, S+1) token sequences, as their trainer calls it."""
    return model.forward_loss_wrapper({"input_ids": sequences[:, None, :]}, "train")["loss"]
