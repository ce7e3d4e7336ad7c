"""The untrained checkpoint from a typed training job is the one its ``i2i train`` options give."""
import json

from embedding.checkpoint import read_meta
from embedding.train_cli import TrainJob
from embedding.untrained import save_untrained, save_untrained_checkpoint


def test_typed_job_and_options_give_the_same_checkpoint(tmp_path):
    from_options = save_untrained_checkpoint(tmp_path / "argv", "notellm2", ["--backbone", "tiny", "--embed-dim", "16"])
    job = TrainJob(notes="notes", pairs="pairs", out="elsewhere", variant="notellm2", backbone="tiny", embed_dim=16)
    typed = save_untrained(tmp_path / "typed", job)
    # the model version hashes the config and the weights: the same seed and options give the same one
    assert read_meta(typed)["model_version"] == read_meta(from_options)["model_version"]
    assert read_meta(typed)["zero_shot"] is True and read_meta(typed)["step"] == 0
    assert json.loads((typed / "config.json").read_text())["embed_dim"] == 16
    assert not (tmp_path / "elsewhere").exists()  # written where asked, not at the job's out

    other = save_untrained(tmp_path / "micl", TrainJob(variant="micl", backbone="tiny", embed_dim=16))
    assert read_meta(other)["model_version"] != read_meta(typed)["model_version"]
