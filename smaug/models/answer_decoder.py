"""Open-ended VideoQA (Singularity / ALBEF style): SmaugModel + an answer decoder.

    video --ViT--> frame tokens --(text-guided frame selection by the question)--+
    question --BERT text layers--> question states --fusion layers (cross-attn)--+--> fused question [B, Lq, Dt]
    answer  [CLS] a_1 .. a_n [SEP] --decoder (causal self-attn + cross-attn to the fused question)--> LM head

The decoder is `decoder_layers` BERT layers with cross-attention, initialised from the pre-trained
model (`init_answer_decoder`): its word/position embeddings from the text encoder's, its layers
from the fusion layers (the last ones when there are fewer decoder layers; cycled when more), its
LM head from the tied MLM head. Training is teacher forcing on the answer tokens (`[CLS]` is the
start token, `[SEP]` the end token, both as the tokenizer writes them); `answer_log_likelihood`
scores given answers and `rank_answers` ranks a fixed answer list the Singularity way (top-k by
first-token probability, then by full log-likelihood).

Attention masks. The decoder's self-attention gets an explicit additive causal + padding mask
[B, 1, L, L], so it is causal with either attention implementation (transformers' SDPA path applies
its own causal flag only without a mask, see text_encoder.py); the question encoder and the fusion
layers stay bidirectional (they are the SmaugModel's, unchanged).

`blind=True` (the text-only baseline) replaces every clip by a black one before encoding, so the
answer can only come from the question; everything else is identical.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from .common import maybe_checkpoint
from .smaug import SmaugModel, SmaugOutput
from .text_encoder import MLMHead, bert_config


class AnswerDecoder(nn.Module):
    """BERT embeddings + `num_layers` causal BERT layers with cross-attention + LM head (tied to its embeddings)."""

    def __init__(self, cfg, num_layers: int):
        super().__init__()
        bc = bert_config(cfg, num_layers)
        self.embeddings = BertEmbeddings(bc)
        dc = copy.deepcopy(bc)
        dc.is_decoder, dc.add_cross_attention = True, True
        self.layers = nn.ModuleList([BertLayer(dc, layer_idx=i) for i in range(num_layers)])
        self.head = MLMHead(bc)
        self.grad_checkpointing = False

    @staticmethod
    def self_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, L] 1 = real -> additive [B, 1, L, L]: position i sees real positions j <= i."""
        L = attention_mask.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=attention_mask.device).tril()
        ok = causal[None, None] & attention_mask[:, None, None, :].bool()
        return (~ok).to(dtype) * torch.finfo(dtype).min

    def forward(self, input_ids, attention_mask, enc_hidden, enc_mask) -> torch.Tensor:
        """input_ids / attention_mask [B, L] (answers), enc_hidden [B, Lq, Dt], enc_mask [B, Lq] -> logits [B, L, V]."""
        h = self.embeddings(input_ids=input_ids)
        ext = self.self_mask(attention_mask, h.dtype)
        enc_ext = (1.0 - enc_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = maybe_checkpoint(
                self.grad_checkpointing, layer, h, ext, encoder_hidden_states=enc_hidden, encoder_attention_mask=enc_ext
            )
        return self.head(h, self.embeddings.word_embeddings.weight)


def token_log_probs(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced log-probabilities of tokens 1..L-1 given the earlier ones: [B, L-1], 0 at padding."""
    lp = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return lp * attention_mask[:, 1:].to(lp.dtype)


class QAModel(SmaugModel):
    """SmaugModel + AnswerDecoder. `forward(batch)` -> SmaugOutput with losses {"qa"}; batch = the loader's
    video + input_ids / attention_mask (the question) + answer_ids / answer_mask. `train_flops` (the trainer's
    MFU) is the parent's pre-training estimate, an approximation for this step."""

    def __init__(self, config, decoder_layers: int = 0, blind: bool = False):
        super().__init__(config)
        n = decoder_layers or (config.text_layers - config.fusion_layer)
        self.answer_decoder = AnswerDecoder(config, n)
        self.blind = blind

    def init_answer_decoder(self) -> None:
        """Copy the pre-trained weights in: embeddings from the text encoder, layers from the fusion layers
        (the last n; cycled when the decoder is deeper), LM head from the MLM head."""
        te, dec = self.text_encoder, self.answer_decoder
        dec.embeddings.load_state_dict(te.bert.embeddings.state_dict())
        fusion = list(te.fusion)
        src = (
            fusion[-len(dec.layers) :]
            if len(dec.layers) <= len(fusion)
            else [fusion[i % len(fusion)] for i in range(len(dec.layers))]
        )
        for d, s in zip(dec.layers, src):
            d.load_state_dict(s.state_dict())
        dec.head.load_state_dict(te.mlm_head.state_dict())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.answer_decoder.grad_checkpointing = bool(enable)

    def encode_question(
        self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(video uint8 [B, T, 3, H, W], question [B, Lq]) -> fused question states [B, Lq, Dt]."""
        if self.blind:
            video = torch.zeros_like(video)
        _, frame_tokens, _, frame_feat = self.forward_video(video, mask_ratio=0.0)
        hidden, text_feat = self.encode_text(input_ids, attention_mask)
        fusion_video = self.select_frames(frame_tokens, frame_feat, text_feat)
        return self.text_encoder.forward_fusion(hidden, attention_mask, fusion_video)

    def forward(self, batch: dict) -> SmaugOutput:
        q_ids, q_mask = batch["input_ids"], batch["attention_mask"]
        fused = self.encode_question(batch["video"], q_ids, q_mask)
        a_ids, a_mask = batch["answer_ids"], batch["answer_mask"]
        logits = self.answer_decoder(a_ids, a_mask, fused, q_mask)
        labels = a_ids[:, 1:].masked_fill(a_mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        stats = dict(answer_tokens=float((labels != -100).sum(1).float().mean()))
        return SmaugOutput(loss, {"qa": loss}, stats, {})

    # ------------------------------------------------------------------ answer scoring
    def answer_log_likelihood(self, fused, q_mask, a_ids, a_mask) -> torch.Tensor:
        """Full log-likelihood of answers: fused [P, Lq, Dt] / q_mask [P, Lq] row-aligned with answers
        a_ids / a_mask [P, La] -> [P] sum of the answer tokens' log-probabilities (after [CLS], incl. [SEP])."""
        logits = self.answer_decoder(a_ids, a_mask, fused, q_mask)
        return token_log_probs(logits, a_ids, a_mask).sum(1)

    @torch.no_grad()
    def rank_answers(self, fused, q_mask, ans_ids, ans_mask, k: int = 128, chunk: int = 1024):
        """Rank a fixed answer list for each question: the top-k answers by the probability of their first
        token, then those k by full log-likelihood.

        fused [B, Lq, Dt], q_mask [B, Lq]; ans_ids / ans_mask [N, La] (every answer tokenised, padded).
        Returns (best answer index [B] long, top-k indices [B, k'] by first-token probability,
        their full log-likelihoods [B, k']), k' = min(k, N).
        """
        B, N = fused.shape[0], ans_ids.shape[0]
        k = min(k, N)
        start = ans_ids[:1, :1].expand(B, 1)  # [CLS], the start token every answer begins with
        first_lp = self.answer_decoder(start, torch.ones_like(start), fused, q_mask)[:, 0].float().log_softmax(-1)
        first_scores = first_lp[:, ans_ids[:, 1]]  # [B, N]
        # ties broken by answer index (stable), so the result does not depend on the backend's topk order
        order = torch.sort(first_scores, dim=1, descending=True, stable=True).indices[:, :k]  # [B, k]
        flat = order.flatten()
        rows = torch.arange(B, device=fused.device).repeat_interleave(k)
        ll = torch.empty(B * k, device=fused.device)
        for s in range(0, B * k, chunk):
            r, a = rows[s : s + chunk], flat[s : s + chunk]
            ids, m = ans_ids[a], ans_mask[a]
            L = int(m.sum(1).max())
            ll[s : s + chunk] = self.answer_log_likelihood(fused[r], q_mask[r], ids[:, :L], m[:, :L])
        ll = ll.view(B, k)
        best = order.gather(1, ll.argmax(1, keepdim=True)).squeeze(1)
        return best, order, ll
