"""`edgeoss convert SRC OUT`: a Hugging Face checkpoint (directory or repo id) -> a model directory."""

from __future__ import annotations


def add_parser(sub) -> None:
    c = sub.add_parser("convert", help="convert a Hugging Face gpt-oss checkpoint (directory or repo id)")
    c.add_argument("src", help="checkpoint directory, or a repo id such as openai/gpt-oss-20b")
    c.add_argument("out", help="output model directory")
    c.add_argument("--preset", choices=("q8", "q4", "bf16"), default="q8",
                   help="attention/embedding/lm_head precision (experts always stay MXFP4); default q8")
    c.add_argument("--force", action="store_true", help="replace OUT if it exists (only once the new model is complete)")
    c.add_argument("--no-tokenizer", action="store_true", help="convert a checkpoint that has no tokenizer.json")
    c.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    c.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN / cached login)")
    c.set_defaults(func=run)


def run(a) -> int:
    from ..convert import convert
    convert(a.src, a.out, preset=a.preset, force=a.force, no_tokenizer=a.no_tokenizer,
            revision=a.revision, token=a.token)
    return 0
