"""`edgeoss info`: what a model directory holds and which kernels this machine will use."""

from __future__ import annotations

from ..format import model_dir as fmt
from ..memory.workspace import kv_bytes
from .args import MODEL_HELP, model_arg


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def kernel_status() -> list[str]:
    """Lines saying which dot-product kernels run here, and why C is not used if it isn't."""
    from ..kernels import dot
    lines = [f"kernels: {dot.BACKEND}" + (f", SIMD level {dot.simd_level_name()}" if dot.BACKEND == "c" else "")]
    if dot.BACKEND == "c":
        lines.append(f"  SIMD levels this CPU can run: {', '.join(dot.available_simd_levels())} "
                     "(force one with EDGEOSS_SIMD)")
    if dot.BACKEND_ERROR:
        lines.append(f"  the C extension is not in use: {dot.BACKEND_ERROR}")
        lines.append("  everything still runs through the Numba fallback (slower); reinstall with a C "
                     "compiler to fix it")
    return lines


def size_breakdown(files: fmt.ModelFiles) -> dict[str, int]:
    groups = {"experts": 0, "attention": 0, "embedding": 0, "lm_head": 0, "other": 0}
    for name, t in files.tensors.items():
        n = t["nbytes"] if t["type"] == "mxfp4_experts" else sum(p["nbytes"] for p in t["parts"].values())
        if t["type"] == "mxfp4_experts":
            groups["experts"] += n
        elif name.endswith((".qkv", ".o")):
            groups["attention"] += n
        elif name == "embed":
            groups["embedding"] += n
        elif name == "lm_head":
            groups["lm_head"] += n
        else:
            groups["other"] += n
    return groups


def describe(path) -> str:
    files = fmt.ModelFiles(path)
    c = files.config
    m = files.manifest
    expert = next(t for t in files.tensors.values() if t["type"] == "mxfp4_experts")
    sizes = size_breakdown(files)
    active = (sizes["attention"] + sizes["lm_head"] + sizes["other"]
              + c.num_hidden_layers * c.num_experts_per_tok * expert["expert_bytes"])
    kv_fixed = kv_bytes(c, 0)  # the sliding layers' rings and checkpoints: the same at any context
    kv_per_token = kv_bytes(c, 1) - kv_fixed
    lines = [
        f"model: {files.path}",
        f"  format v{m['format_version']}, preset {files.preset} (experts MXFP4), source {m['source'].get('path')}",
        f"  layers {c.num_hidden_layers}, hidden {c.hidden_size}, heads {c.num_attention_heads}/{c.num_key_value_heads} "
        f"x {c.head_dim}, experts {c.num_local_experts} (top-{c.num_experts_per_tok}), intermediate "
        f"{c.intermediate_size}, vocab {c.vocab_size}",
        f"  attention: sliding window {c.sliding_window} on {sum(map(c.is_sliding, range(c.num_hidden_layers)))} "
        f"layers, full on the rest; rope theta {c.rope_theta:g}, yarn {c.rope_scaling}",
        f"  size {_gb(m['weights_bytes'])}: " + ", ".join(f"{k} {_gb(v)}" for k, v in sizes.items() if v),
        f"  one expert {_gb(expert['expert_bytes'])} (aligned stride {expert['stride']}); "
        f"read per decoded token ~{_gb(active)}",
        f"  KV cache per sequence: {kv_per_token / 1024:.0f} KiB per token of context (full-attention layers) "
        f"+ {_gb(kv_fixed)} for the sliding windows (with a rollback margin and checkpoints)",
        "  tokenizer: " + ("o200k_harmony (bundled)" if files.vocab_path else "none (token ids only)"),
    ]
    return "\n".join(lines + kernel_status())


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a converted model and the kernels in use")
    i.add_argument("model", type=model_arg, help=MODEL_HELP)
    i.set_defaults(func=run)


def run(a) -> int:
    print(describe(a.model))
    return 0
