"""The multimodal large representation model (MLRM) of NoteLLM-2 in all its variants.

basic: basic prompt, the last hidden state is the note embedding (section 2.2).
micl: mICL prompt; the hidden state before <IMG_EMB> is the visual note embedding n^v, the last
      one the multimodal embedding n^m (section 3), trained with eq. 9.
late_fusion: basic prompt plus the gate of eq. 7 fusing the vision encoder's pooled feature.
notellm2: mICL plus late fusion (the same gate fuses both n^v and n^m).
only_late_fusion: the LLM reads text only; the image enters through the gate alone.
text_only: the LLM reads text only, no image at all.
Every variant ends in a linear projection to ``embed_dim`` and L2 normalisation; n^m (or the
single embedding) is what gets indexed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embedding.backbones import build_llm, build_vision, freeze
from embedding.config import ModelConfig
from embedding.connector import LateFusionGate, QFormerConnector
from embedding.inputs import PreparedBatch
from embedding.prompts import SPECIAL_TOKENS


@dataclass
class NoteEmbeddings:
    multimodal: torch.Tensor  # (B, embed_dim), L2-normalised: the note embedding
    visual: torch.Tensor | None  # (B, embed_dim), L2-normalised mICL visual embedding, else None
    attentions: tuple[torch.Tensor, ...] | None = None  # per LLM layer (B, heads, T, T), when asked for


class MLRM(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, pretrained: bool = True,
                 llm_config_dir: str | None = None, vision_config_dir: str | None = None):
        super().__init__()
        self.config = config.validate()
        self.llm = build_llm(config.llm, vocab_size, pretrained, llm_config_dir)
        hidden = int(self.llm.config.hidden_size)
        self.vision = freeze(build_vision(config.vision, pretrained, vision_config_dir)) if config.uses_image else None
        vision_dim = self.vision.feature_dim if self.vision is not None else 0
        self.connector = QFormerConnector(config.connector, vision_dim, hidden) if config.image_into_llm else None
        self.gate = LateFusionGate(vision_dim, hidden) if config.uses_late_fusion else None
        self.head = nn.Linear(hidden, config.embed_dim)
        self.tau = nn.Parameter(torch.tensor(float(config.temperature_init)))  # logits scaled by e^tau
        table = self.llm.get_input_embeddings().weight
        # <IMG> and <IMG_EMB> are added last to the tokenizer, so they are its last ids
        self.first_new_token = vocab_size - len(SPECIAL_TOKENS)
        if pretrained:
            with torch.no_grad():  # new tokens start at the mean of the pretrained rows (official NoteLLM code)
                table[self.first_new_token:vocab_size] = table[:self.first_new_token].mean(dim=0)
        self.new_tokens = None
        if not config.llm.train_embeddings:
            table.requires_grad_(False)
            if config.llm.train_new_tokens:  # a frozen table whose new rows still learn
                self.new_tokens = nn.Parameter(table[self.first_new_token:vocab_size].detach().clone())
        if config.llm.gradient_checkpointing:
            self.llm.gradient_checkpointing_enable()

    def train(self, mode: bool = True) -> "MLRM":
        super().train(mode)
        if self.vision is not None:
            self.vision.eval()  # frozen: batch-norm statistics and dropout stay in inference mode
        return self

    def trainable_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(LLM parameters, newly initialised parameters): the two learning-rate groups."""
        llm = [p for p in self.llm.parameters() if p.requires_grad]
        llm_ids = {id(p) for p in llm}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in llm_ids]
        return llm, new

    def no_decay(self) -> set[int]:
        """Ids of parameters exempt from weight decay: biases, norm weights, token rows, the temperature."""
        exempt = {id(self.tau), id(self.llm.get_input_embeddings().weight)}
        if self.new_tokens is not None:
            exempt.add(id(self.new_tokens))
        return exempt | {id(p) for p in self.parameters() if p.ndim < 2}

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.llm.get_input_embeddings()(input_ids)
        if self.new_tokens is None:
            return embeds
        is_new = input_ids >= self.first_new_token
        rows = self.new_tokens[(input_ids - self.first_new_token).clamp(min=0)]
        return torch.where(is_new.unsqueeze(-1), rows.to(embeds.dtype), embeds)

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features, pooled = self.vision(pixels)
        return features.float(), pooled.float()

    def forward(self, batch: PreparedBatch, output_attentions: bool = False) -> NoteEmbeddings:
        """``output_attentions`` needs eager attention (``llm.set_attn_implementation("eager")``)."""
        embeds = self.token_embeddings(batch.input_ids)
        features, pooled = batch.features, batch.pooled
        if self.vision is not None and features is None:
            features, pooled = self.encode_image(batch.pixels)
        if self.connector is not None:
            visual_tokens = self.connector(features).to(embeds.dtype)
            embeds = embeds.masked_scatter(batch.image_mask.unsqueeze(-1), visual_tokens.reshape(-1, embeds.shape[-1]))
        llm_out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False,
                           **({"output_attentions": True} if output_attentions else {}))
        hidden = llm_out.last_hidden_state
        note = hidden[:, -1]
        visual = None
        if self.config.uses_micl:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            visual = hidden[rows, batch.img_emb_index - 1]
        if self.gate is not None:
            note = self.gate(pooled, note)
            visual = self.gate(pooled, visual) if visual is not None else None
        return NoteEmbeddings(
            multimodal=F.normalize(self.head(note.float()), dim=-1),
            visual=F.normalize(self.head(visual.float()), dim=-1) if visual is not None else None,
            attentions=llm_out.attentions if output_attentions else None,
        )
