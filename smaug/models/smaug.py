"""SMAUG (arXiv 2211.11446): sparse masked video-language pre-training, with the dense
Singularity-style baseline as a config switch.

    video [B, T, 3, H, W] uint8 --normalise--> ViT per frame (MAE masking, EViT sparsification)
        -> frame tokens [B, T, 1 + n, Dv] --frame [CLS] -> vision_proj--> frame_feat [B, T, E]
        --video_pooling (the mean of frames)--> video_feat [B, E]
    text [B, L] --BERT layers [0, fusion_layer)--> text_hidden [B, L, Dt] --[CLS] -> text_proj--> text_feat [B, E]
    VTC  video_feat x text_feat over the global batch
    VTM  text-guided frame selection -> fusion layers (cross-attention) -> vtm_head, 1 pos + 2 neg pairs
         (negatives mined from the VTC similarities, or uniform: `vtm_negatives`)
    MLM  masked text -> BERT text layers -> fusion with the positive pair's frames -> tied MLM head
    MVM  MAE decoder on the encoder tokens -> normalised pixels of masked patches

`dense=True` (mask_ratio 0, no sparsification, all frames to fusion, no MVM) is the baseline. The temporal
extensions (temporal blocks, temporal moments, the arrow-of-time and order-blind VTC terms) live in
temporal.py and moments.py: the model builds them only when a temporal knob is on, and they act through the
pooling component and one hook (`TemporalExtension.vtc_terms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import (
    all_gather_no_grad,
    all_gather_with_grad,
    draw_seed,
    pad_text_to_global_length,
    sincos_pos_embed_1d,
    world,
)
from .flops import train_flops
from .frame_selection import FrameSelector
from .frame_tokens import resize_time
from .losses import mlm_loss, mvm_loss, sample_negatives, token_overlap, vtc_loss, vtm_loss
from .mae_decoder import MAEDecoder, patchify
from .moments import TemporalMoments
from .temporal import TemporalExtension, wanted
from .text_encoder import TextEncoder, mask_tokens
from .video_encoder import VideoEncoder
from .vit_blocks import ACTIVATIONS, FAMILIES


@dataclass
class SmaugConfig:
    """Every knob of the model. Defaults = the `base` preset (ViT-B/16 224px + BERT-base 9+3)."""

    # ---- video encoder: timm ViT blocks applied to each frame ----
    image_size: int = 224  # frame height = width in pixels (the loader crops/resizes to it)
    patch_size: int = 16  # ViT patch size; image_size must be a multiple
    num_frames: int = 4  # T frames per clip (an image is repeated T times)
    vision_width: int = 768  # ViT embedding dim Dv
    vision_depth: int = 12  # number of ViT blocks
    vision_heads: int = 12  # attention heads per ViT block
    vision_mlp_ratio: float = 4.0  # ViT MLP hidden = ratio * width
    vision_qkv_bias: bool = True  # qkv bias, as ViT-B/16 (timm, MAE, CLIP); BEiT: q and v biases
    drop_path_rate: float = 0.1  # stochastic depth, linear over the blocks
    # block family and options; set from the checkpoint by `pretrained.init_config` (model.vision_init)
    vision_family: str = "vit"  # "vit" (timm ViT: augreg, MAE), "clip" (timm CLIP: norm_pre, no patch bias), "beit"
    vision_act: str = "gelu"  # ViT MLP activation: "gelu" or "quick_gelu" (OpenAI CLIP's quickgelu architectures)
    vision_norm_eps: float = 1e-6  # LayerNorm eps of the ViT (timm ViT / BEiT 1e-6, timm CLIP 1e-5)
    vision_layer_scale: float = 0.0  # layer-scale init value (BEiT-base 0.1); 0 = no layer scale
    vision_abs_pos: bool = True  # absolute position embedding (BEiT-base has only the relative bias)
    mean: tuple[float, float, float] = (
        0.485,
        0.456,
        0.406,
    )  # pixel mean (ImageNet); from the vision checkpoint's pretrained_cfg when loaded
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # pixel std (ImageNet); uint8 video is normalised on device
    # ---- MAE masking + decoder ----
    mask_ratio: float = 0.75  # fraction of each frame's patches hidden from the encoder (random per frame, train only)
    decoder_width: int = 384  # MAE decoder width: VideoMAE's lightweight ViT-B decoder (half the encoder)
    decoder_depth: int = 4  # MAE decoder blocks (VideoMAE ViT-B: 4)
    decoder_heads: int = 6  # decoder attention heads (64-dim heads)
    norm_pix_loss: bool = True  # MVM target = per-patch normalised pixels (MAE)
    # ---- token sparsification (EViT) ----
    sparsify_layers: tuple[int, ...] = (3, 6, 9)  # 0-based blocks that reorganise tokens (EViT's 4th/7th/10th of 12)
    keep_ratio: float = 0.7  # each sparsify block keeps ceil(keep_ratio * n) tokens per frame by [CLS] attention
    sparsify_mode: str = "fuse"  # "fuse": dropped tokens -> one attention-weighted token (EViT); "drop": discard
    # ---- text encoder + fusion: transformers BERT ----
    text_width: int = 768  # BERT hidden size Dt
    text_layers: int = 12  # BERT layers in all: [0, fusion_layer) text-only, the rest with cross-attention
    fusion_layer: int = 9  # first fusion layer (Singularity: 9 text + 3 fusion for BERT-base)
    text_heads: int = 12  # BERT attention heads
    text_intermediate: int = 3072  # BERT FFN hidden size
    text_dropout: float = 0.1  # BERT hidden + attention dropout
    text_max_positions: int = 512  # BERT position embeddings (>= the loader's max_text_len)
    vocab_size: int = 30522  # tokenizer vocabulary (trainer fills the token fields from the tokenizer)
    pad_token_id: int = 0  # [PAD]
    mask_token_id: int = 103  # [MASK]
    cls_token_id: int = 101  # [CLS]
    sep_token_id: int = 102  # [SEP]
    mlm_prob: float = 0.5  # MLM masking probability; 0.5 as Singularity (captions are short), BERT used 0.15
    # ---- text-guided frame selection ----
    select_frames: int = 2  # frames per clip that go to fusion (top-k of num_frames); = num_frames disables selection
    select_temp: float = 0.1  # softmax temperature of the frame scores (cosine / select_temp)
    select_gumbel: bool = True  # training samples the k frames (Gumbel top-k) instead of plain top-k; eval is top-k
    # ---- contrastive head and loss weights ----
    embed_dim: int = 256  # VTC embedding dim E (vision_proj / text_proj output)
    temp_init: float = 0.07  # initial VTC temperature (learned in log space)
    temp_min: float = 0.001  # VTC temperature clamp, low end (a gradient back inside always passes)
    temp_max: float = 0.5  # VTC temperature clamp, high end
    # VTM negatives: "hard" = mined from the VTC similarities (ALBEF/BLIP, the paper); "uniform" = any
    # other sample; "auto" = uniform until VTM clearly beats its label prior, then hard for good (the
    # trainer's curriculum switches when the pair accuracy over a log window reaches vtm_switch_acc). Hard
    # negatives from a random init keep VTM at its prior (pair accuracy 2/3), so "auto" is the default.
    vtm_negatives: str = "auto"
    vtm_switch_acc: float = 0.9  # "auto": pair accuracy on uniform negatives that starts hard ones (the prior, always
    # "no match", scores 2/3); too low a bar starts them before the features separate the hard pairs
    vtm_hard_by: float = 1.0  # "auto": hard negatives start at this share of train.steps at the latest, bar reached or
    # not (0.5: VTM trains on them for the second half whatever the seed); 1 = only when the bar is reached. Off by
    # default until a forced start is measured to keep VTM above its prior (docs/experiments.md, issue 34)
    vtm_hard_share: float = 1.0  # "auto": share of each batch's rows whose two negatives are mined once the ramp is
    # done; the others stay uniform (1 = all, the paper's). A pair the fusion cannot yet tell from its positive is best
    # answered "no", so an all-hard batch can pin VTM to its prior (2/3) while uniform rows keep a signal it learns from
    vtm_hard_ramp: int = 0  # "auto": steps over which that share grows linearly from 0 once hard negatives start
    vtm_dup_overlap: float = 0.8  # never a VTM negative: a caption whose token set overlaps the positive's this much
    # (|A & B| / |A | B| of the non-special token ids; 1 = identical sets only): re-worded near-duplicates
    # (WebVid repeats captions with a word changed) are false negatives, which mining picks first
    fusion_clip_token: bool = False  # one more video token for fusion, with every frame's tokens: the clip's retrieval
    # embedding (read without gradient; with temporal_moments > 1 it holds the direction of motion), so VTM, MLM and
    # VideoQA read what VTC learned about the whole clip, where the selected frames leave motion for cross-attention to
    # infer and an unseen colour-shape pair's tokens are off the training distribution
    fusion_time_embed: bool = False  # a per-frame embedding added to the tokens fusion reads (VTM, MLM, VideoQA),
    # initialised as a 1-D sin-cos of the frame index at the scale of the tokens (learned from there), so cross-attention
    # knows which of the selected frames comes first: the encoder's own temporal embedding starts at zero (to start as
    # the image model) and stays near it (norm ~0.1 against ~10 for the patch positions after the quickstart), which
    # leaves fusion blind to the direction of motion (its VTM ranking chose the right axis, not the direction)
    w_vtc: float = 1.0  # loss weight: video-text contrastive
    w_vtm: float = 1.0  # loss weight: video-text matching
    w_mlm: float = 1.0  # loss weight: masked language modelling
    w_mvm: float = 1.0  # loss weight: masked video modelling (MAE pixels); no decoder is built when 0
    # ---- temporal extensions (temporal.py, moments.py): off in the paper's model ----
    temporal_layers: int = 0  # transformer blocks across frames on top of the frame encoder; 0 = none (the paper:
    # frames are encoded on their own and the clip is the mean of its frames, the same for a motion and its reverse)
    temporal_scope: str = "cls"  # what those blocks attend over: "cls" (the T frame [CLS] tokens, Singularity-temporal)
    # or "all" (every token of every frame: joint space-time attention; sees where objects go)
    temporal_moments: int = 1  # moments over time (orthogonal polynomials) in the video embedding: 1 = the mean of
    # frame features only (blind to frame order); 2 adds "late minus early" (the direction things move), 3 a curvature
    moments_weight: float = 0.5  # the moments' share of the video embedding: unit(mean) + at most weight * unit
    moments_xy: bool = False  # temporal moments also of the patch tokens' spatial moments (where things are in each
    # frame, `moments.spatial_moments`), so the embedding reads where things go without the [CLS] learning positions
    moments_centroid: bool = False  # temporal moments also of where the salient part of each frame is
    # (`moments.saliency_centroid`, 2 numbers a frame): its moment 1 is a velocity, free of what moves, so a direction
    # learned on some objects holds for unseen ones
    vtc_reversed: float = 0.0  # weight of VTC's arrow-of-time term: each text also scored against its own clip played
    # backwards, a negative, for one more encoder forward without gradient (0 = off). Teaches the order-aware readout
    # and the text the direction of motion; only where captions name directions. Needs temporal_moments > 1 or
    # temporal_layers > 0
    vtc_static: float = 1.0  # with temporal_moments > 1: weight of a second VTC term on the order-blind part alone
    # (moment 0, the mean of frames), so appearance keeps the full contrastive signal once motion separates part of
    # the batch

    def __post_init__(self):
        self.sparsify_layers = tuple(sorted(set(int(i) for i in self.sparsify_layers)))
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        checks = [
            (
                "image_size",
                self.image_size > 0 and self.image_size % self.patch_size == 0,
                "a positive multiple of patch_size",
            ),
            ("num_frames", self.num_frames >= 1, ">= 1"),
            ("temporal_layers", self.temporal_layers >= 0, ">= 0"),
            ("temporal_scope", self.temporal_scope in ("cls", "all"), "'cls' or 'all'"),
            ("temporal_moments", self.temporal_moments >= 1, ">= 1"),
            (
                "vtc_reversed",
                self.vtc_reversed == 0
                or (self.vtc_reversed > 0 and (self.temporal_moments > 1 or self.temporal_layers > 0)),
                ">= 0, and > 0 only with an order-aware video embedding (temporal_moments > 1 or temporal_layers > 0)",
            ),
            ("vtc_static", self.vtc_static >= 0, ">= 0"),
            ("moments_xy", not self.moments_xy or self.temporal_moments > 1, "true only with temporal_moments > 1"),
            (
                "moments_centroid",
                not self.moments_centroid or self.temporal_moments > 1,
                "true only with temporal_moments > 1",
            ),
            ("vision_width", self.vision_width % self.vision_heads == 0, "divisible by vision_heads"),
            ("text_width", self.text_width % self.text_heads == 0, "divisible by text_heads"),
            (
                "decoder_width",
                self.decoder_width % self.decoder_heads == 0 and self.decoder_width % 4 == 0,
                "divisible by decoder_heads and by 4",
            ),
            ("mask_ratio", 0.0 <= self.mask_ratio < 1.0, "in [0, 1)"),
            ("keep_ratio", 0.0 < self.keep_ratio <= 1.0, "in (0, 1]"),
            ("sparsify_layers", all(0 <= i < self.vision_depth for i in self.sparsify_layers), "in [0, vision_depth)"),
            ("sparsify_mode", self.sparsify_mode in ("fuse", "drop"), "'fuse' or 'drop'"),
            ("fusion_layer", 0 <= self.fusion_layer < self.text_layers, "in [0, text_layers) (>= 1 fusion layer)"),
            ("select_frames", 1 <= self.select_frames <= self.num_frames, "in [1, num_frames]"),
            ("select_temp", self.select_temp > 0, "> 0"),
            ("mlm_prob", 0.0 < self.mlm_prob < 1.0, "in (0, 1)"),
            (
                "temp_init",
                0 < self.temp_min <= self.temp_init <= self.temp_max,
                "in [temp_min, temp_max], temp_min > 0",
            ),
            ("vtm_negatives", self.vtm_negatives in ("auto", "hard", "uniform"), "'auto', 'hard' or 'uniform'"),
            ("vtm_switch_acc", 0.0 < self.vtm_switch_acc <= 1.0, "in (0, 1]"),
            ("vtm_hard_by", 0.0 <= self.vtm_hard_by <= 1.0, "in [0, 1]"),
            ("vtm_hard_share", 0.0 < self.vtm_hard_share <= 1.0, "in (0, 1]"),
            ("vtm_hard_ramp", self.vtm_hard_ramp >= 0, ">= 0"),
            ("vtm_dup_overlap", 0.0 < self.vtm_dup_overlap <= 1.0, "in (0, 1]"),
            ("vision_family", self.vision_family in FAMILIES, f"one of {FAMILIES}"),
            ("vision_act", self.vision_act in ACTIVATIONS, f"one of {ACTIVATIONS}"),
            ("vision_norm_eps", self.vision_norm_eps > 0, "> 0"),
            ("vision_layer_scale", self.vision_layer_scale >= 0, ">= 0 (0 = none)"),
            ("std", len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0, "3 positive values (mean: 3)"),
        ]
        checks += [(w, getattr(self, w) >= 0, ">= 0") for w in ("w_vtc", "w_vtm", "w_mlm", "w_mvm", "drop_path_rate")]
        checks += [
            (t, 0 <= getattr(self, t) < self.vocab_size, f"in [0, vocab_size={self.vocab_size})")
            for t in ("pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id")
        ]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"SmaugConfig.{name}: must be {need}, got {getattr(self, name)!r}")

    @property
    def dense(self) -> bool:
        """The dense baseline: no masking, no sparsification, every frame to fusion."""
        return self.mask_ratio == 0 and not self.sparsify_layers and self.select_frames == self.num_frames

    @classmethod
    def preset(cls, name: str, dense: bool = False, **overrides) -> SmaugConfig:
        """A named preset ("tiny", "base"), optionally dense, with field=value overrides."""
        if name not in PRESETS:
            raise ValueError(f"SmaugConfig.preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"SmaugConfig: unknown field(s) {', '.join(unknown)}")
        values = {**PRESETS[name], **overrides}
        if dense:
            T = values.get("num_frames", cls.num_frames)
            for k, v in dict(mask_ratio=0.0, sparsify_layers=(), select_frames=T, w_mvm=0.0).items():
                asked = overrides.get(k, v)
                if (tuple(asked) if k == "sparsify_layers" else asked) != v:
                    raise ValueError(f"SmaugConfig.{k}: dense=True sets it to {v!r}, override asks {overrides[k]!r}")
                values[k] = v
        return cls(**values)


PRESETS: dict[str, dict] = {
    "base": {},  # the dataclass defaults: ViT-B/16 224px, BERT-base 9+3, 2 of 4 frames, keep 0.7 at blocks 3/6/9
    # CPU tests + quickstart: 7x7 patches, 12 visible per frame. A run config's data.image_size must equal a preset's image_size (refused otherwise); the frame count is the
    # data's (data.num_frames), so no preset sets it
    "tiny": dict(
        image_size=112,
        patch_size=16,
        vision_width=192,
        vision_depth=4,
        vision_heads=3,
        drop_path_rate=0.0,
        decoder_width=128,
        decoder_depth=1,
        decoder_heads=4,
        sparsify_layers=(1, 2),
        text_width=192,
        text_layers=6,
        fusion_layer=4,
        text_heads=3,
        text_intermediate=768,
        text_dropout=0.0,
        text_max_positions=128,
        select_frames=2,
        embed_dim=128,
    ),
}


@dataclass
class SmaugOutput:
    loss: torch.Tensor  # weighted sum of the losses
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # vtc, vtm, mlm, mvm (0 when off)
    stats: dict[str, float] = field(default_factory=dict)  # per-clip token/frame counts (host floats)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached device scalars, logged: vtm_acc


class _InwardClamp(torch.autograd.Function):
    """clamp(x, lo, hi) whose backward blocks only the gradient that would push an out-of-range x
    further out (gradient descent moves x by -grad); inside the range it is the identity's."""

    @staticmethod
    def forward(ctx, x, lo: float, hi: float):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        outward = ((x > ctx.hi) & (grad < 0)) | ((x < ctx.lo) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None, None


def inward_clamp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """x clamped to [lo, hi]; its gradient passes inside the range and wherever it points back in."""
    return _InwardClamp.apply(x, lo, hi)


class MeanPooling(nn.Module):
    """The paper's clip embedding: the mean of the frames' projected [CLS]. The pooling interface:
    embed(frame_feat [B, T, E], tokens [B, T, 1 + n, Dv], ids [B, T, n]) -> [B, E] unnormalised."""

    def embed(self, frame_feat: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return frame_feat.mean(1)


def video_pooling(cfg) -> nn.Module:
    """The pooling component: the mean of frames, or with `temporal_moments` > 1 the mean plus the moments over
    time (moments.py, a temporal extension)."""
    if cfg.temporal_moments <= 1:
        return MeanPooling()
    grid = cfg.image_size // cfg.patch_size
    return TemporalMoments(
        cfg.vision_width,
        cfg.embed_dim,
        cfg.temporal_moments,
        cfg.moments_xy,
        cfg.moments_centroid,
        cfg.moments_weight,
        grid,
    )


# Checkpoints written before `video_pooling` hold the moments under this prefix (see upgrade_state_dict).
_OLD_POOLING = "temporal_moments."


class SmaugModel(nn.Module):
    """The SMAUG model (or the dense baseline). `forward(batch) -> SmaugOutput`.

    With torch.distributed initialised (world > 1), `forward` is collective: every rank must
    call it each step (features and VTM inputs are all-gathered).
    """

    def __init__(self, config: SmaugConfig):
        super().__init__()
        self.config = cfg = config
        self.video_encoder = VideoEncoder(cfg)
        self.temporal = TemporalExtension(cfg) if wanted(cfg) else None  # temporal.py; None in the paper's model
        self.text_encoder = TextEncoder(cfg)
        self.mae_decoder = MAEDecoder(cfg) if cfg.mask_ratio > 0 and cfg.w_mvm > 0 else None
        self.frame_selector = (
            FrameSelector(cfg.embed_dim, cfg.select_frames, cfg.select_temp, cfg.select_gumbel)
            if cfg.select_frames < cfg.num_frames
            else None
        )
        self.vision_proj = nn.Linear(cfg.vision_width, cfg.embed_dim)
        self.video_pooling = video_pooling(cfg)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim)
        # BERT cross-attention keys/values take hidden_size inputs: map video tokens to Dt if needed
        self.video_to_text = (
            nn.Linear(cfg.vision_width, cfg.text_width) if cfg.vision_width != cfg.text_width else nn.Identity()
        )
        self.vtm_head = nn.Linear(cfg.text_width, 1)
        # `fusion_clip_token`: the clip's embedding as one more video token per frame (vision width, normed as the
        # encoder's output tokens are), see forward_video
        self.clip_token = (
            nn.Sequential(nn.Linear(cfg.embed_dim, cfg.vision_width), nn.LayerNorm(cfg.vision_width))
            if cfg.fusion_clip_token
            else None
        )
        self.fusion_time = (  # [1, T, 1, Dv], see `fusion_time_embed`; resized over time for other frame counts
            nn.Parameter(sincos_pos_embed_1d(cfg.vision_width, torch.arange(cfg.num_frames))[None, :, None])
            if cfg.fusion_time_embed
            else None
        )
        # log temperature, shape [1] (DeepSpeed cannot broadcast 0-d parameters); `temp` is the value in use
        self.vtc_log_temp = nn.Parameter(torch.full((1,), math.log(cfg.temp_init)))
        for m in (self.vision_proj, self.text_proj, self.video_to_text, self.vtm_head, *(self.clip_token or ())):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self._pixel_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # see pixel_stats()
        self._register_load_state_dict_pre_hook(self._upgrade_on_load)

    @staticmethod
    def upgrade_state_dict(sd: dict) -> dict:
        """A state dict written before `video_pooling` (the moments under `temporal_moments.`) in today's names."""
        if not any(k.startswith(_OLD_POOLING) for k in sd):
            return sd
        return {
            ("video_pooling." + k[len(_OLD_POOLING) :] if k.startswith(_OLD_POOLING) else k): v for k, v in sd.items()
        }

    def _upgrade_on_load(self, state_dict, prefix, *args) -> None:
        old = prefix + _OLD_POOLING
        for k in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "video_pooling." + k[len(old) :]] = state_dict.pop(k)

    # ------------------------------------------------------------------ encoders
    @property
    def temp(self) -> torch.Tensor:
        """VTC temperature in use: exp of the learned log temperature, clamped to [temp_min, temp_max].
        No in-place clamp (a ZeRO fp32 master copy would undo it); instead the clamp passes every
        gradient that points back inside the range, so the temperature can never get stuck outside."""
        lo, hi = math.log(self.config.temp_min), math.log(self.config.temp_max)
        return inward_clamp(self.vtc_log_temp, lo, hi).exp()[0]

    def pixel_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 (mean, std) [1, 1, 3, 1, 1] on `device`, uploaded once per device: an upload each step
        (torch.tensor(..., device=cuda)) would be a host-device sync. Not buffers, so DeepSpeed's
        bf16 cast cannot round them and state dicts do not carry them."""
        key = str(device)
        if key not in self._pixel_stats:
            self._pixel_stats[key] = tuple(
                torch.tensor(v, dtype=torch.float32).view(1, 1, 3, 1, 1).to(device)
                for v in (self.config.mean, self.config.std)
            )
        return self._pixel_stats[key]

    def normalize_video(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, H, W] -> (x / 255 - mean) / std in the model dtype; float input is taken as normalised."""
        dtype = self.vision_proj.weight.dtype
        if video.dtype == torch.uint8:
            mean, std = self.pixel_stats(video.device)
            video = (video.float() / 255.0 - mean) / std
        return video.to(dtype)

    def forward_video(self, video: torch.Tensor, mask_ratio: float | None = None):
        """video: [B, T, 3, H, W] -> (VideoEncoderOutput, frame_tokens [B, T, 1 + n, Dv], video_feat [B, E],
        frame_feat [B, T, E]). `enc.tokens` are the frame encoder's output (what the MAE decoder reads);
        frame_tokens the same after the temporal blocks, if any (what fusion reads); feats L2-normalised.
        mask_ratio None: config.mask_ratio in training, 0 in eval."""
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if self.training else 0.0
        enc = self.video_encoder(self.normalize_video(video), mask_ratio)
        tokens = enc.tokens if self.temporal is None else self.temporal.tokens(enc.tokens)
        frame_feat = self.vision_proj(tokens[:, :, 0])  # [B, T, E]
        B, T = tokens.shape[:2]
        video_feat = self.video_pooling.embed(frame_feat, tokens, enc.ids.view(B, T, -1))
        if self.clip_token is not None:
            # appended to every frame's tokens, so whichever frames the selector picks, fusion (VTM, MLM, the QA
            # model) sees the whole clip: frame_tokens [B, T, 1 + n + 1, Dv]; [CLS] and patches keep their places.
            # Without gradient: VTC alone shapes the embedding, the other objectives learn to read it
            token = self.clip_token(video_feat.detach())[:, None, None].expand(B, T, 1, -1)
            tokens = torch.cat([tokens, token.to(tokens.dtype)], dim=2)
        return enc, tokens, F.normalize(video_feat, dim=-1), F.normalize(frame_feat, dim=-1)

    def encode_video(self, video: torch.Tensor):
        """-> frame_tokens [B, T, 1 + n, Dv], video_feat [B, E], frame_feat [B, T, E] (normalised)."""
        return self.forward_video(video)[1:]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """-> text_hidden [B, L, Dt] (before fusion), text_feat [B, E] normalised."""
        hidden = self.text_encoder.forward_text(input_ids, attention_mask)
        return hidden, F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def get_video_features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> [B, E] L2-normalised retrieval embedding (never masked)."""
        return self.forward_video(video, mask_ratio=0.0)[2]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, E] L2-normalised retrieval embedding."""
        return self.encode_text(input_ids, attention_mask)[1]

    # ------------------------------------------------------------------ fusion
    def select_frames(self, frame_tokens, frame_feat, text_feat) -> torch.Tensor:
        """Row-aligned pairs: frame_tokens [P, T, N, Dv], frame_feat [P, T, E], text_feat [P, E]
        -> fusion video tokens [P, k * N, Dt] (k = select_frames, or all T without a selector)."""
        if self.fusion_time is not None:  # each token marked with its frame's place in time, before the selection
            frame_tokens = frame_tokens + resize_time(self.fusion_time, frame_tokens.shape[1]).to(frame_tokens.dtype)
        if self.frame_selector is None or frame_tokens.shape[1] <= self.frame_selector.k:
            tokens = frame_tokens.flatten(1, 2)
        else:
            tokens = self.frame_selector(frame_tokens, frame_feat, text_feat)[0]
        return self.video_to_text(tokens)

    def vtm_logits(self, frame_tokens, frame_feat, text_hidden, text_feat, attention_mask) -> torch.Tensor:
        """Row-aligned (video, text) pairs -> [P] match logits."""
        video = self.select_frames(frame_tokens, frame_feat, text_feat)
        return self.vtm_head(self.text_encoder.forward_fusion(text_hidden, attention_mask, video)[:, 0]).squeeze(-1)

    # ------------------------------------------------------------------ losses
    def caption_duplicates(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [B, L] padded caption ids -> [B, B] bool, True where two captions must not be each other's VTM
        negative: identical (same padded ids) or near-identical (token sets overlapping >= `vtm_dup_overlap`)."""
        cfg = self.config
        # identical: an elementwise compare, not torch.unique, whose data-dependent output size would force a host
        # sync mid-forward
        same = (ids[:, None, :] == ids[None, :, :]).all(-1)
        # near-identical: a re-worded caption of the same content is a false negative, and the one mining picks
        # first (the synthetic corpus's paraphrases share ~half their tokens, as do captions that differ in one
        # attribute, so no overlap bar tells those apart: the bar only catches near-duplicates)
        special = (cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id)
        return same | (token_overlap(ids, cfg.vocab_size, special) >= cfg.vtm_dup_overlap)

    def forward_vtm(
        self,
        frame_tokens,
        frame_feat,
        text_hidden,
        text_feat,
        input_ids,
        attention_mask,
        sim: torch.Tensor,
        seed: int,
        hard: float,
        same_sample: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """1 positive + 2 negatives per sample (one video per text, one text per video), drawn from
        the global batch: mined from the VTC similarities `sim` [Bg, Bg] for the first round(hard x b) samples of
        each rank's b (`hard`: the share of rows on hard negatives, 0-1), uniformly for the others; negatives may
        live on other ranks. Never a negative: the same sample (`same_sample` [Bg, Bg]), an identical caption,
        or a near-identical one (token sets overlapping >= `vtm_dup_overlap`).
        Returns (loss, metrics: pair accuracy of this rank's 3b pairs `vtm_acc`, and of the rows on each kind of
        negative, `vtm_acc_hard` / `vtm_acc_uniform`, each present when this rank has such rows; all detached)."""
        b = frame_tokens.shape[0]
        rank, _ = world()
        ft, ff = all_gather_with_grad(frame_tokens), all_gather_with_grad(frame_feat)
        th, tf = all_gather_with_grad(text_hidden), all_gather_with_grad(text_feat)
        ids_all, am_all = all_gather_no_grad(input_ids), all_gather_no_grad(attention_mask)
        same = self.caption_duplicates(ids_all)
        if same_sample is not None:
            same = same | same_sample
        gen = torch.Generator(device=sim.device).manual_seed(seed)
        n_hard = int(round(hard * b))  # a host number: the rows' kinds cost no sync
        if 0 < n_hard < b:  # the same rows of every rank: index within its slice < n_hard
            mined = torch.arange(sim.shape[0], device=sim.device) % b < n_hard
        else:
            mined = n_hard == b  # all or none: the plain sampler (bit for bit the single-kind runs)
        neg_text, neg_video = sample_negatives(sim, same, gen, hard=mined)
        nt, nv = neg_text[rank * b : (rank + 1) * b], neg_video[rank * b : (rank + 1) * b]
        # index_select, not x[idx]: its backward (index_add) is deterministic on CPU, while
        # x[idx] backward (index_put_ accumulate) uses parallel float atomics for repeated indices
        ft, ff, th, tf, am_neg = (
            x.index_select(0, i) for x, i in ((ft, nv), (ff, nv), (th, nt), (tf, nt), (am_all, nt))
        )
        logits = self.vtm_logits(
            torch.cat([frame_tokens, ft, frame_tokens]),
            torch.cat([frame_feat, ff, frame_feat]),
            torch.cat([text_hidden, text_hidden, th]),
            torch.cat([text_feat, text_feat, tf]),
            torch.cat([attention_mask, attention_mask, am_neg]),
        )
        labels = torch.cat([torch.ones(b, device=logits.device), torch.zeros(2 * b, device=logits.device)])
        self._last_negatives = (neg_text, neg_video)  # global indices, for tests and debugging
        # pair accuracy; 2/3 = always "no match" (the label prior), what a VTM head that learned nothing gives;
        # per kind of negative over each row's 3 pairs (positive, its negative video, its negative text): 2/3 each
        right = ((logits.detach() > 0).float() == labels).float().view(3, b).sum(0)  # [b] right answers per row
        metrics = {"vtm_acc": right.sum() / (3 * b)}
        if n_hard > 0:
            metrics["vtm_acc_hard"] = right[:n_hard].sum() / (3 * n_hard)
        if n_hard < b:
            metrics["vtm_acc_uniform"] = right[n_hard:].sum() / (3 * (b - n_hard))
        return vtm_loss(logits, labels), metrics

    def forward_mlm(
        self, input_ids, attention_mask, frame_tokens, frame_feat, text_feat, static: bool = False
    ) -> torch.Tensor:
        """Masked captions through the text layers, then fused with the positive pair's selected frames
        (frame_tokens [B, T, N, Dv], frame_feat [B, T, E], text_feat [B, E] of the unmasked caption).
        The MLM head reads only the masked positions (a host sync), or with `static` every position with
        the others' labels ignored (fixed shapes, for a compiled step)."""
        cfg = self.config
        fusion_video = self.select_frames(frame_tokens, frame_feat, text_feat)  # [B, k * N, Dt]
        masked, labels = mask_tokens(
            input_ids,
            attention_mask,
            cfg.mlm_prob,
            cfg.mask_token_id,
            cfg.vocab_size,
            [cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id],
        )
        hidden = self.text_encoder.forward_text(masked, attention_mask)
        hidden = self.text_encoder.forward_fusion(hidden, attention_mask, fusion_video)
        if static:
            return mlm_loss(self.text_encoder.mlm_logits(hidden.flatten(0, 1)), labels.flatten())
        sel = labels != -100
        return mlm_loss(self.text_encoder.mlm_logits(hidden[sel]), labels[sel])

    def forward_mvm(self, video: torch.Tensor, enc) -> torch.Tensor:
        """MAE decoder on the encoder tokens; loss on the masked patches of each frame.
        video: normalised [B, T, 3, H, W] (the pixel targets)."""
        pred = self.mae_decoder(enc.tokens.flatten(0, 1), enc.ids)
        target = patchify(video.flatten(0, 1), self.config.patch_size)
        return mvm_loss(pred, target, enc.mask, self.config.norm_pix_loss)

    def forward(self, batch: dict, mask_ratio: float | None = None, vtm_hard: float | None = None) -> SmaugOutput:
        """One pre-training forward. batch: video uint8 [B, T, 3, H, W], input_ids / attention_mask [B, L],
        optional sample_id [B] (other keys ignored). The trainer passes the state it owns: `mask_ratio`, the MAE
        mask ratio of this step (None: config.mask_ratio in training, 0 in eval, as dropout), and `vtm_hard`, the share
        of rows whose VTM negatives are mined (True/False: all/none; None: all if config.vtm_negatives == "hard",
        else none; the curriculum decides for "auto")."""
        cfg = self.config
        if mask_ratio is None:  # resolved here: the temporal extensions' reversed clip is masked alike
            mask_ratio = cfg.mask_ratio if self.training else 0.0
        vtm_hard = float(cfg.vtm_negatives == "hard" if vtm_hard is None else vtm_hard)  # share of rows, 0-1
        seed = draw_seed()  # first draw of the step: ranks seeded alike draw the same negatives as one process would
        video = self.normalize_video(batch["video"])  # once; float input passes through
        ids, am = pad_text_to_global_length(batch["input_ids"], batch["attention_mask"], cfg.pad_token_id)

        # encoders: MAE-masked, sparsified frames; text
        enc, frame_tokens, video_feat, frame_feat = self.forward_video(video, mask_ratio)
        text_hidden, text_feat = self.encode_text(ids, am)
        same_sample = None
        if batch.get("sample_id") is not None:  # rows of one clip: VTC positives, never VTM negatives
            sid = all_gather_no_grad(batch["sample_id"])
            same_sample = sid[:, None] == sid[None, :]

        # losses
        zero = video_feat.new_zeros((), dtype=torch.float32)
        losses = dict(vtc=zero, vtm=zero, mlm=zero, mvm=zero)
        metrics: dict[str, torch.Tensor] = {}
        vtc, sim = vtc_loss(video_feat, text_feat, self.temp, same_sample)
        if self.temporal is not None:  # the temporal extensions' VTC terms (temporal.py)
            vtc = self.temporal.vtc_terms(
                self, vtc, video, mask_ratio, video_feat, text_feat, frame_tokens, same_sample, metrics
            )
        losses["vtc"] = vtc
        if cfg.w_vtm > 0:
            losses["vtm"], vtm_metrics = self.forward_vtm(
                frame_tokens, frame_feat, text_hidden, text_feat, ids, am, sim, seed, vtm_hard, same_sample
            )
            metrics.update(vtm_metrics)
        if cfg.w_mlm > 0:
            losses["mlm"] = self.forward_mlm(ids, am, frame_tokens, frame_feat, text_feat)
        if self.mae_decoder is not None and enc.mask is not None:
            losses["mvm"] = self.forward_mvm(video, enc)
        loss = sum(getattr(cfg, f"w_{k}") * v for k, v in losses.items())

        T, n_out = enc.tokens.shape[1], enc.tokens.shape[2] - 1
        k = T if self.frame_selector is None else min(self.frame_selector.k, T)
        stats = dict(
            visible_tokens=float(T * enc.num_visible),
            kept_tokens=float(T * n_out),
            selected_frames=float(k),
            fusion_tokens=float(k * (n_out + 1)),
        )  # host numbers: no GPU sync
        return SmaugOutput(loss, losses, stats, metrics)

    # ------------------------------------------------------------------ trainer hooks
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute ViT blocks, BERT layers and decoder blocks in backward (non-reentrant)."""
        for m in (self.video_encoder, self.text_encoder, self.mae_decoder):
            if m is not None:
                m.grad_checkpointing = bool(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay: every bias / norm / scalar (ndim <= 1), the
        temperature, [CLS] / mask tokens, the position and temporal embeddings and BEiT's relative
        position bias tables (as timm's BEiT)."""
        extra = {
            "video_encoder.cls_token",
            "video_encoder.pos_embed",
            "video_encoder.temporal_embed",
            "temporal.pos_embed",
            "mae_decoder.mask_token",
            "fusion_time",
            "vtc_log_temp",
        }
        names = {n for n, _ in self.named_parameters()}
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(".relative_position_bias_table")} | (
            extra & names
        )

    def train_flops(self, batch_size: int, text_len: int) -> float:
        """Model FLOPs of one forward + backward on `batch_size` clips (see `flops.train_flops`)."""
        return train_flops(self.config, batch_size, text_len)
