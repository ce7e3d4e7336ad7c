"""The connector C_pi (Q-Former with learnable queries plus a projector) and the late-fusion gate (eq. 7)."""
from __future__ import annotations

import torch
from torch import nn

from embedding.config import ConnectorConfig


class QFormerConnector(nn.Module):
    """Visual features Z_v (B, L, h_v) -> L_c visual embeddings E_v (B, L_c, h_t) in the LLM's word space."""

    def __init__(self, config: ConnectorConfig, vision_dim: int, llm_dim: int):
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        self.queries = nn.Parameter(torch.randn(1, config.num_queries, config.hidden_size) * 0.02)
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(
            hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
            cross_attention_frequency=config.cross_attention_frequency, encoder_hidden_size=vision_dim))
        self.projector = nn.Linear(config.hidden_size, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(features.shape[0], -1, -1).to(features.dtype)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=features).last_hidden_state
        return self.projector(out)


class LateFusionGate(nn.Module):
    """Eq. 7: v = Linear(pooled image feature); z = sigmoid(W[v, n] + b); n' = z*v + (1-z)*n."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.visual = nn.Linear(vision_dim, llm_dim)
        self.gate = nn.Linear(2 * llm_dim, llm_dim)

    def forward(self, pooled_image: torch.Tensor, note: torch.Tensor) -> torch.Tensor:
        v = self.visual(pooled_image.to(self.visual.weight.dtype))
        note = note.to(v.dtype)
        z = torch.sigmoid(self.gate(torch.cat([v, note], dim=-1)))
        return z * v + (1 - z) * note
