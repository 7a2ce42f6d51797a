"""`python -m edgeoss.engine.compile_kernels`: compile (into Numba's on-disk cache) every
kernel the engine runs, by running a tiny synthetic model through each of its paths, then mark
the cache complete. engine/warmup.py starts it in the background on a first run."""

from __future__ import annotations

from pathlib import Path

from ..kernels import loops
from .model import load
from .warmup import marker_path


def compile_all() -> None:
    """Run a tiny synthetic model through every path the engine compiles (prompt chunks, one-token
    steps, several sequences in one pass, each sampling branch), then write the marker."""
    import tempfile

    import numpy as np

    from ..convert import convert
    from ..convert.synthetic import make_checkpoint

    with tempfile.TemporaryDirectory(prefix="edgeoss-warmup-") as tmp:
        hf = make_checkpoint(Path(tmp) / "hf", preset="tiny", seed=0, tokenizer_dir=False, vocab_size=1024)
        model = load(convert(str(hf), Path(tmp) / "model", preset="q8", no_tokenizer=True, progress=False),
                     context=256)
        list(model.generate(list(range(1, 20)), max_tokens=3, temperature=0.0))
        a, b = model.new_sequence(), model.new_sequence()
        model.forward([1, 2, 3], sequence=a)
        model.forward_batch([(a, [4]), (b, [5, 6, 7])])
        logits = np.linspace(-1, 1, 1024).astype(np.float32)
        for top_k, top_p in ((0, 1.0), (5, 0.9)):
            loops.sample_token(logits, 1.0, top_k, top_p, 0.5)
        marker = marker_path()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("compiled\n")
        # then what only a model that streams its experts runs (compiled in the caller if it
        # gets there first)
        from ..memory import planner
        plan = planner.make_plan(model.files, "1T", context=256)
        budget = plan.fixed + 5 * model.config.num_hidden_layers * plan.expert_bytes
        streamed = load(model.files.path, memory=budget, context=256)
        list(streamed.generate(list(range(1, 20)), max_tokens=3, temperature=0.0))


if __name__ == "__main__":
    compile_all()
