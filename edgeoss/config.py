"""The gpt-oss hyperparameters as one dataclass, read from a Hugging Face config.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import EdgeossError


class ConfigError(EdgeossError):
    """A config that is not a gpt-oss config we can run; the message says what is wrong."""


@dataclass(frozen=True)
class GptOssConfig:
    hidden_size: int                  # H: width of the residual stream (2880)
    intermediate_size: int            # I: width of one expert's SwiGLU (2880)
    num_hidden_layers: int            # L (24 for 20b, 36 for 120b)
    num_attention_heads: int          # query heads (64)
    num_key_value_heads: int          # key/value heads, shared by groups of query heads (8)
    head_dim: int                     # width of one head (64)
    num_local_experts: int            # E: experts per layer (32 / 128)
    num_experts_per_tok: int          # k: experts each token uses (4)
    vocab_size: int                   # V: rows of the embedding and lm_head (201088)
    sliding_window: int               # keys a sliding layer sees, itself included (128)
    layer_types: tuple[str, ...]      # "sliding_attention" | "full_attention", one per layer
    rope_theta: float = 150000.0
    rope_scaling: dict | None = None  # yarn: factor, beta_fast, beta_slow, original_max_position_embeddings, truncate
    swiglu_limit: float = 7.0         # gate clamped above, linear half clamped to +-limit
    swiglu_alpha: float = 1.702       # gate * sigmoid(alpha * gate)
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    eos_token_ids: tuple[int, ...] = field(default=(200002, 199999, 200012))

    # -- derived ---------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def qkv_rows(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == "sliding_attention"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GptOssConfig":
        d = dict(d)
        d["layer_types"] = tuple(d["layer_types"])
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_hf(cls, hf: dict, generation_config: dict | None = None) -> "GptOssConfig":
        """Build from a Hugging Face gpt-oss config.json, with messages that say what is wrong."""
        if not isinstance(hf, dict):
            raise ConfigError("config.json is not a JSON object")
        mt = hf.get("model_type")
        if mt != "gpt_oss":
            raise ConfigError(f"config.json has model_type {mt!r}, not 'gpt_oss': edgeoss runs OpenAI's "
                              "gpt-oss models only (e.g. openai/gpt-oss-20b)")
        need = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "num_local_experts", "vocab_size"]
        missing = [k for k in need if k not in hf]
        if missing:
            raise ConfigError(f"config.json lacks {', '.join(missing)}")
        n_layers = int(hf["num_hidden_layers"])
        layer_types = hf.get("layer_types") or [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
        if len(layer_types) != n_layers or any(t not in ("sliding_attention", "full_attention") for t in layer_types):
            raise ConfigError("config.json layer_types must list 'sliding_attention' or 'full_attention' "
                              f"once per layer ({n_layers})")
        k = hf.get("num_experts_per_tok", hf.get("experts_per_token", 4))
        eos = (generation_config or {}).get("eos_token_id", hf.get("eos_token_id", [200002, 199999, 200012]))
        eos = [eos] if isinstance(eos, int) else list(eos)
        scaling = hf.get("rope_scaling")
        if scaling is not None and scaling.get("rope_type", scaling.get("type")) not in ("yarn",):
            raise ConfigError(f"unsupported rope_scaling {scaling!r}: gpt-oss uses yarn")
        cfg = cls(
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_hidden_layers=n_layers,
            num_attention_heads=int(hf["num_attention_heads"]),
            num_key_value_heads=int(hf["num_key_value_heads"]),
            head_dim=int(hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])),
            num_local_experts=int(hf["num_local_experts"]),
            num_experts_per_tok=int(k),
            vocab_size=int(hf["vocab_size"]),
            sliding_window=int(hf.get("sliding_window") or 128),
            layer_types=tuple(layer_types),
            rope_theta=float(hf.get("rope_theta", 150000.0)),
            rope_scaling=dict(scaling) if scaling else None,
            swiglu_limit=float(hf.get("swiglu_limit", 7.0)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 131072)),
            eos_token_ids=tuple(int(e) for e in eos),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % 32:
                raise ConfigError(f"{name} = {getattr(self, name)} is not a multiple of 32 (MXFP4 blocks)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ConfigError("head_dim must be even (rotary embedding)")
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ConfigError("num_experts_per_tok must be between 1 and num_local_experts")


def yarn_inv_freq(cfg: GptOssConfig) -> tuple[list[float], float]:
    """Rotary inverse frequencies (head_dim/2 of them) and the attention scaling factor.

    YaRN keeps the high-frequency dimensions as trained (extrapolation), divides the
    low-frequency ones by `factor` (interpolation) and ramps linearly between the two,
    then scales cos/sin by 0.1*ln(factor)+1 (the "concentration").
    """
    dim, base = cfg.head_dim, cfg.rope_theta
    half = dim // 2
    extrap = [1.0 / base ** (2 * i / dim) for i in range(half)]
    s = cfg.rope_scaling
    if not s:
        return extrap, 1.0
    factor = float(s.get("factor", 1.0))
    orig = float(s.get("original_max_position_embeddings", 4096))

    def correction_dim(n_rot: float) -> float:
        return dim * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(float(s.get("beta_fast", 32.0))), correction_dim(float(s.get("beta_slow", 1.0)))
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    inv = []
    for i in range(half):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        keep = 1.0 - ramp  # weight of the un-interpolated frequency
        inv.append(extrap[i] / factor * (1 - keep) + extrap[i] * keep)
    mscale = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv, mscale
