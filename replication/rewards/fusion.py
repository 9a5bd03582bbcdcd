"""ImageReward's architecture (BLIP with a scalar head), for ImageReward v1.0 and IterComp-style checkpoints.

ImageReward (Xu et al., 2023) is BLIP with a scalar head: a ViT turns the image into patch tokens; a
BERT-style text encoder reads the prompt and attends to those tokens through cross-attention in
every layer; an MLP (linear layers with dropout, no activations) maps the first token's output to a
score, z-scored with a fixed mean and std. IterComp's composition-aware reward models share it.

`load_imagereward` reads such a checkpoint (the original `ImageReward.pt` + `med_config.json`, from a
local path or a hub id) into `transformers.BlipVisionModel` + `BlipTextModel` by renaming keys, so
neither the image-reward package nor torchvision is needed. It is what `image_reward` and
`compositional` load at paper scale (`rewards.preference.load_preference`); the tiny world trains
CLIP-based preference models instead (see rewards/preference.py for why).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from .base import ImagePreprocess
from .parts import PreferenceHead, ZScoredReward, freeze_vision, run_vision

FORMAT = "fusion-reward"
# ImageReward v1.0's normalisation of its raw score (mean and std over its own evaluation set)
IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072


class FusionModel(nn.Module):
    """vision tower -> patch tokens -> BLIP text encoder (cross-attention) -> head on the first token.

    `vision` is a `BlipVisionModel` (ImageReward's ViT; its post-layernorm applies to every token) or a
    `CLIPVisionModel` (whose post-layernorm is applied here to every token, as BLIP's ViT does).
    """

    def __init__(self, vision: nn.Module, text: nn.Module, head: PreferenceHead, vision_kind: str):
        super().__init__()
        if vision_kind not in ("clip", "blip"):
            raise ValueError(f"vision_kind must be 'clip' or 'blip', got {vision_kind!r}")
        self.vision, self.text, self.head, self.vision_kind = vision, text, head, vision_kind

    def trainable(self, trainable_vision_layers: int) -> FusionModel:
        self.requires_grad_(True)
        freeze_vision(self.vision, trainable_vision_layers)
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = run_vision(self.vision, pixel_values, clip_style=self.vision_kind == "clip")
        return self.vision.post_layernorm(h)

    def score_encoded(
        self, tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=tokens,
            encoder_attention_mask=torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device),
        )
        return self.head(out.last_hidden_state[:, 0].float())

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        return self.score_encoded(self.encode_images(pixel_values), input_ids, attention_mask)


class FusionReward(ZScoredReward):
    """reward(images, prompts) = (raw - mean) / std of a FusionModel (ImageReward's normalisation)."""

    def save(self, out_dir: str | Path, extra: dict | None = None) -> None:
        """A folder: vision/, text/ (save_pretrained), head.safetensors, tokenizer/, reward_config.json."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.vision.save_pretrained(str(out / "vision"))
        self.model.text.save_pretrained(str(out / "text"))
        save_file({k: v.contiguous() for k, v in self.model.head.state_dict().items()}, str(out / "head.safetensors"))
        self.tokenizer.save_pretrained(str(out / "tokenizer"))
        (out / "preprocessor_config.json").write_text(json.dumps(self.preprocess.config(), indent=1))
        head_dims = [m.out_features for m in self.model.head.layers if isinstance(m, nn.Linear)][:-1]
        head_drop = [m.p for m in self.model.head.layers if isinstance(m, nn.Dropout)]
        cfg = {
            "format": FORMAT,
            "name": self.name,
            "vision_kind": self.model.vision_kind,
            "max_length": self.max_length,
            "mean": self.mean,
            "std": self.std,
            "head_dims": head_dims,
            "head_dropout": head_drop,
            **(extra or {}),
        }
        (out / "reward_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))

    @classmethod
    def load_folder(cls, folder: Path, device=None) -> FusionReward:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BlipTextModel, BlipVisionModel, CLIPVisionModel

        cfg = json.loads((folder / "reward_config.json").read_text())
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{folder}/reward_config.json is not a {FORMAT} folder")
        vcls = CLIPVisionModel if cfg["vision_kind"] == "clip" else BlipVisionModel
        vision = vcls.from_pretrained(str(folder / "vision"))
        text = BlipTextModel.from_pretrained(str(folder / "text"), add_pooling_layer=False)
        head = PreferenceHead(text.config.hidden_size, cfg["head_dims"], cfg["head_dropout"])
        head.load_state_dict(load_file(str(folder / "head.safetensors")))
        tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        pre = ImagePreprocess.from_folder(folder, vision.config.image_size)
        return cls(
            FusionModel(vision, text, head, cfg["vision_kind"]),
            tok,
            pre,
            cfg["name"],
            cfg["max_length"],
            cfg["mean"],
            cfg["std"],
            device,
        )


# ----------------------------------------------------------------------------- paper scale: ImageReward checkpoints
_VIT_RULES = [  # BLIP's timm-style ViT -> transformers BlipVisionModel
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def convert_imagereward_state(state: dict) -> dict[str, dict]:
    """Split an ImageReward/IterComp state dict (keys `blip.visual_encoder.*`, `blip.text_encoder.*`,
    `mlp.layers.*`) into transformers-named state dicts {'vision', 'text', 'head'}; other keys
    (BLIP's projections, position ids) are not used by the reward and are dropped."""
    out: dict[str, dict] = {"vision": {}, "text": {}, "head": {}}
    for key, value in state.items():
        k = key[len("blip.") :] if key.startswith("blip.") else key
        if k.startswith("visual_encoder."):
            sub = k[len("visual_encoder.") :]
            for pat, rep in _VIT_RULES:
                if re.search(pat, sub):
                    out["vision"][re.sub(pat, rep, sub)] = value
                    break
            else:
                raise KeyError(f"unrecognised vision key {key!r} in the ImageReward checkpoint")
        elif k.startswith("text_encoder."):
            sub = k[len("text_encoder.") :]
            if not sub.endswith("position_ids") and not sub.startswith("pooler."):
                out["text"][sub] = value
        elif k.startswith("mlp."):
            out["head"][k[len("mlp.") :]] = value
    missing = [part for part, d in out.items() if not d]
    if missing:
        raise KeyError(
            f"the checkpoint has no {', '.join(missing)} weights: is it an ImageReward-style reward model "
            f"(keys blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)?"
        )
    return out


def _resolve_files(source, filename: str, med_config: str, revision: str | None) -> tuple[Path, Path]:
    src = Path(str(source))
    if src.is_file():
        return src, src.with_name(med_config)
    if src.is_dir():
        return src / filename, src / med_config
    if str(source).startswith(("/", ".", "models")):
        raise FileNotFoundError(f"no ImageReward checkpoint at {source}")
    from huggingface_hub import hf_hub_download

    return (
        Path(hf_hub_download(str(source), filename, revision=revision)),
        Path(hf_hub_download(str(source), med_config, revision=revision)),
    )


def load_imagereward(
    source: str | Path = "THUDM/ImageReward",
    device=None,
    filename: str = "ImageReward.pt",
    med_config: str = "med_config.json",
    tokenizer: str = "bert-base-uncased",
    vision_heads: int | None = None,
    mean: float = IMAGEREWARD_MEAN,
    std: float = IMAGEREWARD_STD,
    max_length: int = 35,
    revision: str | None = None,
    name: str = "image_reward",
) -> FusionReward:
    """ImageReward v1.0 (default: hub id THUDM/ImageReward) or an IterComp-style checkpoint in the same format:
    a .pt state dict and BLIP's med_config.json (the text encoder's BERT config), given as a file, a folder or a
    hub id. The ViT's size is read from the weights; heads default to width // 64 (BLIP's ViT-B and ViT-L)."""
    from transformers import AutoTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    ckpt, med = _resolve_files(source, filename, med_config, revision)
    for f in (ckpt, med):
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing: an ImageReward-style model needs {filename} and {med_config}")
    state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    parts = convert_imagereward_state(state)
    v = parts["vision"]
    width = v["embeddings.class_embedding"].shape[-1]
    patch = v["embeddings.patch_embedding.weight"].shape[-1]
    grid = int(round((v["embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    depth = 1 + max(int(k.split(".")[2]) for k in v if k.startswith("encoder.layers."))
    vision = BlipVisionModel(
        BlipVisionConfig(
            hidden_size=width,
            intermediate_size=v["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=depth,
            num_attention_heads=vision_heads or max(1, width // 64),
            image_size=grid * patch,
            patch_size=patch,
            layer_norm_eps=1e-6,
        )
    )  # BLIP's ViT uses LayerNorm(eps=1e-6)
    vision.load_state_dict(v)
    m = json.loads(med.read_text())
    text = BlipTextModel(
        BlipTextConfig(
            vocab_size=m["vocab_size"],
            hidden_size=m["hidden_size"],
            encoder_hidden_size=width,
            intermediate_size=m["intermediate_size"],
            num_hidden_layers=m["num_hidden_layers"],
            num_attention_heads=m["num_attention_heads"],
            max_position_embeddings=m["max_position_embeddings"],
            layer_norm_eps=m.get("layer_norm_eps", 1e-12),
            hidden_act=m.get("hidden_act", "gelu"),
            pad_token_id=m.get("pad_token_id", 0),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            use_cache=False,
        ),
        add_pooling_layer=False,
    )
    missing, unexpected = text.load_state_dict(parts["text"], strict=False)
    if missing or unexpected:
        raise KeyError(
            f"text encoder weights do not fit BLIP's med_config: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    head_w = [
        parts["head"][k] for k in sorted(parts["head"], key=lambda s: int(s.split(".")[1])) if k.endswith("weight")
    ]
    head = PreferenceHead(head_w[0].shape[1], [w.shape[0] for w in head_w[:-1]])
    head.load_state_dict(parts["head"])
    tok = AutoTokenizer.from_pretrained(tokenizer)
    if tok.bos_token is None:  # BLIP's BERT tokenizer gains [DEC] as bos and [ENC]; prompts are encoded without them
        tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return FusionReward(
        FusionModel(vision, text, head, "blip"), tok, ImagePreprocess(grid * patch), name, max_length, mean, std, device
    )
