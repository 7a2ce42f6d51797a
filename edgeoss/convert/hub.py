"""Finding a checkpoint: a local directory, or a Hugging Face repo id fetched with huggingface_hub."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ..errors import EdgeossError

# What conversion needs; skips OpenAI's original/ and metal/ copies of the same weights.
ALLOW_PATTERNS = ["config.json", "generation_config.json", "model.safetensors.index.json",
                  "model*.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json"]

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(EdgeossError):
    pass


def resolve_checkpoint(src: str, revision: str | None = None, token: str | None = None) -> Path:
    """A local path as it is; a repo id is downloaded (resumably) into the Hugging Face cache.

    Honours HF_HUB_OFFLINE (then only an already-cached snapshot is used) and HF_TOKEN."""
    p = Path(src).expanduser()
    if p.exists():
        return p
    if not REPO_ID.match(src) or src.startswith((".", "/", "~")):
        raise HubError(f"{src} does not exist (and is not a Hugging Face repo id like openai/gpt-oss-20b)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - a core dependency
        raise HubError(f"huggingface_hub is needed to download {src}: {e}") from None
    if not sys.stderr.isatty():  # a log gets a line, not thousands of progress redraws
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
        print(f"downloading {src} (resumes where an interrupted download stopped)", file=sys.stderr, flush=True)
    try:
        return Path(snapshot_download(src, revision=revision, token=token, allow_patterns=ALLOW_PATTERNS))
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else \
            "it is not cached and the Hugging Face Hub cannot be reached"
        raise HubError(f"cannot get {src}: {why}. Download it where there is a network "
                       "(huggingface-cli download ...) and pass the local directory.") from None
    except RepositoryNotFoundError:
        raise HubError(f"no Hugging Face repository {src} (or it needs a token: --token / HF_TOKEN)") from None
    except HfHubHTTPError as e:
        raise HubError(f"downloading {src} failed: {e}") from None
