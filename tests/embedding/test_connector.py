import torch

from embedding.config import ConnectorConfig
from embedding.connector import LateFusionGate, QFormerConnector


def test_gate_matches_eq7():
    torch.manual_seed(0)
    gate = LateFusionGate(vision_dim=6, llm_dim=4)
    pooled, note = torch.randn(3, 6), torch.randn(3, 4)
    v = pooled @ gate.visual.weight.T + gate.visual.bias
    z = torch.sigmoid(torch.cat([v, note], dim=-1) @ gate.gate.weight.T + gate.gate.bias)
    assert torch.allclose(gate(pooled, note), z * v + (1 - z) * note, atol=1e-6)


def test_qformer_turns_any_feature_length_into_lc_word_embeddings():
    connector = QFormerConnector(ConnectorConfig(num_queries=5, hidden_size=16, num_layers=2, num_heads=2,
                                                 intermediate_size=32), vision_dim=12, llm_dim=24)
    for length in (1, 9, 49):
        out = connector(torch.randn(2, length, 12))
        assert out.shape == (2, 5, 24) and out.dtype == torch.float32
