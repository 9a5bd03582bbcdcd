"""One function per pipeline stage: what a notebook calls. Each reads its section of the parameters,
calls the real code in the package, and writes the stage's outputs.

Stages are grouped by concern, one module each (spine: base model, CLIP, SFT sharpening, evaluation,
Fig. 6; rewards: judged feedback, learned rewards, the base model's metrics; finetune: the fine-tuning
baselines and RLHF sharpening; inference: the NFE sweep and Fig. 5). This registry is not a DVC dependency
of the stages: it holds no logic, and registering a stage must not rerun the others. `python -m replication.stages <stage>` runs one without a notebook, e.g. on several GPUs:
`accelerate launch -m replication.stages sft_sharpening --profile sdxl`.
"""

from __future__ import annotations

import json

from .. import quiet_hub_progress
from .common import device, image_text_source, model_source, write_json
from .finetune import (
    FINETUNE_STAGES,
    d3po,
    ddpo,
    diffusion_dpo,
    draft,
    iterpo,  # noqa: F401 (re-exported)
    rlhf_sharpening,
    standard_finetune,
)
from .inference import fig5, nfe_sweep
from .rewards import evaluate_base, feedback, rewards
from .spine import base_model, clip, evaluate_clip, fig6, sft_sharpening

quiet_hub_progress()

STAGES = {
    "base_model": base_model,
    "clip": clip,
    "sft_sharpening": sft_sharpening,
    "evaluate": evaluate_clip,
    "fig6": fig6,
    "feedback": feedback,
    "rewards": rewards,
    "evaluate_base": evaluate_base,
    "nfe_sweep": nfe_sweep,
    "fig5": fig5,
    **FINETUNE_STAGES,  # standard_finetune, rlhf_sharpening, diffusion_dpo, ddpo, d3po, iterpo, draft
    # new stages register here, one line each
}


def main(argv=None) -> int:
    import argparse

    from .. import config

    ap = argparse.ArgumentParser(prog="python -m replication.stages", description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--profile", default=None)
    a = ap.parse_args(argv)
    out = STAGES[a.stage](config.load(profile=a.profile))
    print(json.dumps(out, indent=1, default=str))
    return 0


__all__ = [
    "STAGES",
    "main",
    "device",
    "image_text_source",
    "model_source",
    "write_json",
    *(fn.__name__ for fn in STAGES.values()),
]
