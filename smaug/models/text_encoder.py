"""BERT text encoder + cross-attention fusion layers + tied MLM head, from `transformers`.

BERT layers [0, fusion_layer) encode the text alone (`forward_text`); layers
[fusion_layer, text_layers) are `BertLayer`s with cross-attention to the video tokens
(`forward_fusion`). For BERT-base that is 9 + 3, as in Singularity; the cross-attention
weights are new, everything else loads from a BERT checkpoint (`smaug.models.pretrained`).

Attention masks. transformers only builds cross-attention into a `BertLayer` whose config has
`is_decoder=True`, and then its self-attention is marked causal. In transformers 5's SDPA path
(`integrations/sdpa_attention.py`) causality is applied only when no mask is passed
(`is_causal = q_len > 1 and attention_mask is None and module.is_causal`); the eager path never
applies it by itself (it adds the given mask). We (1) always pass our own additive padding mask
[B, 1, 1, L] and (2) set `attention.self.is_causal = False` on fusion layers, so fusion
self-attention is bidirectional with either implementation. `tests/test_model_text.py` checks
that changing the last token changes the first token's output.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertLayer, BertPredictionHeadTransform

from .common import maybe_checkpoint


def bert_config(cfg, num_layers: int) -> BertConfig:
    """The transformers BertConfig for `num_layers` text layers of a SmaugConfig."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.text_width,
        num_hidden_layers=num_layers,
        num_attention_heads=cfg.text_heads,
        intermediate_size=cfg.text_intermediate,
        hidden_dropout_prob=cfg.text_dropout,
        attention_probs_dropout_prob=cfg.text_dropout,
        max_position_embeddings=cfg.text_max_positions,
        pad_token_id=cfg.pad_token_id,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        attn_implementation="sdpa",
    )


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's init (normal(0, 0.02) weights, zero biases, unit LayerNorm) for modules built outside BertModel."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mlm_prob: float,
    mask_token_id: int,
    vocab_size: int,
    special_ids: list[int],
):
    """BERT MLM masking: each real, non-special token is chosen with prob `mlm_prob`; of those
    80% become [MASK], 10% a random token, 10% stay. Every caption with a maskable token gets
    at least one (so the loss is never empty). Pads and special tokens are never chosen.

    input_ids, attention_mask: [B, L] -> masked_ids [B, L], labels [B, L] (-100 = not chosen).
    """
    dev = input_ids.device
    maskable = attention_mask.bool()
    for i in special_ids:  # compares with Python ints: a tensor of the ids would be an upload (a sync) per step
        maskable = maskable & (input_ids != i)
    chosen = (torch.rand(input_ids.shape, device=dev) < mlm_prob) & maskable
    empty = ~chosen.any(1) & maskable.any(1)
    pick = (torch.rand(input_ids.shape, device=dev) * maskable).argmax(1)
    # a comparison, not F.one_hot: one_hot validates its indices with a host sync (on CPU; CUDA asserts)
    chosen = chosen | ((torch.arange(input_ids.shape[1], device=dev) == pick[:, None]) & empty[:, None])
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    u = torch.rand(input_ids.shape, device=dev)
    masked = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    rand_tok = torch.randint(vocab_size, input_ids.shape, device=dev)
    masked = torch.where(chosen & (u >= 0.8) & (u < 0.9), rand_tok, masked)
    return masked, labels


class MLMHead(nn.Module):
    """BERT's MLM head with the decoder weight tied to the word embeddings (passed in, not owned)."""

    def __init__(self, bc: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(bc)
        self.bias = nn.Parameter(torch.zeros(bc.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """h: [K, Dt] -> logits [K, vocab]."""
        return F.linear(self.transform(h), word_embeddings, self.bias)


class TextEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.bert_config = bert_config(cfg, cfg.fusion_layer)
        self.bert = BertModel(self.bert_config, add_pooling_layer=False)  # embeddings + text-only layers
        fc = copy.deepcopy(self.bert_config)
        fc.is_decoder, fc.add_cross_attention = True, True
        self.fusion = nn.ModuleList([BertLayer(fc, layer_idx=i) for i in range(cfg.text_layers - cfg.fusion_layer)])
        for layer in self.fusion:
            layer.attention.self.is_causal = False  # bidirectional: see the module docstring
        self.mlm_head = MLMHead(self.bert_config)
        self.fusion.apply(init_bert_weights)
        self.mlm_head.transform.apply(init_bert_weights)
        self.grad_checkpointing = False

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings.weight

    @staticmethod
    def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, L] 1 = real -> additive [B, 1, 1, L]: 0 for real tokens, dtype-min for padding."""
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, L] -> text hidden states [B, L, Dt] (layers [0, fusion_layer))."""
        h = self.bert.embeddings(input_ids=input_ids)
        ext = self.extended_mask(attention_mask, h.dtype)
        for layer in self.bert.encoder.layer:
            h = maybe_checkpoint(self.grad_checkpointing, layer, h, ext)
        return h

    def forward_fusion(self, hidden: torch.Tensor, attention_mask: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """hidden: [P, L, Dt] text states, attention_mask: [P, L], video: [P, S, Dt] tokens -> [P, L, Dt]."""
        ext = self.extended_mask(attention_mask, hidden.dtype)
        for layer in self.fusion:
            # by keyword: BertLayer's positional order differs between transformers releases
            hidden = maybe_checkpoint(self.grad_checkpointing, layer, hidden, ext, encoder_hidden_states=video)
        return hidden

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [K, Dt] fusion output at masked positions -> [K, vocab] (decoder tied to word embeddings)."""
        return self.mlm_head(hidden, self.word_embeddings)
