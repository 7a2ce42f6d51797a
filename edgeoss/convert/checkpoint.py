"""Reading a Hugging Face gpt-oss checkpoint directory, validated before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import ConfigError, GptOssConfig
from ..errors import EdgeossError
from ..format.safetensors import SafetensorsError, SafetensorsFile


class CheckpointError(EdgeossError):
    """A checkpoint that cannot be converted; the message names the file or tensor."""


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent} has no {path.name}: it is not a Hugging Face checkpoint "
                              f"directory ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def expected_tensors(cfg: GptOssConfig, dense_experts: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor a gpt-oss checkpoint must hold: name -> (safetensors dtype, shape)."""
    H, I, E, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts, cfg.vocab_size
    hd, nh, nkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    t = {"model.embed_tokens.weight": ("BF16", (V, H)), "model.norm.weight": ("BF16", (H,)),
         "lm_head.weight": ("BF16", (V, H))}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        t.update({
            p + "input_layernorm.weight": ("BF16", (H,)),
            p + "post_attention_layernorm.weight": ("BF16", (H,)),
            p + "self_attn.q_proj.weight": ("BF16", (nh * hd, H)), p + "self_attn.q_proj.bias": ("BF16", (nh * hd,)),
            p + "self_attn.k_proj.weight": ("BF16", (nkv * hd, H)), p + "self_attn.k_proj.bias": ("BF16", (nkv * hd,)),
            p + "self_attn.v_proj.weight": ("BF16", (nkv * hd, H)), p + "self_attn.v_proj.bias": ("BF16", (nkv * hd,)),
            p + "self_attn.o_proj.weight": ("BF16", (H, nh * hd)), p + "self_attn.o_proj.bias": ("BF16", (H,)),
            p + "self_attn.sinks": ("BF16", (nh,)),
            p + "mlp.router.weight": ("BF16", (E, H)), p + "mlp.router.bias": ("BF16", (E,)),
            p + "mlp.experts.gate_up_proj_bias": ("BF16", (E, 2 * I)),
            p + "mlp.experts.down_proj_bias": ("BF16", (E, H)),
        })
        if dense_experts:  # transformers' dequantized layout: input dimension first
            t[p + "mlp.experts.gate_up_proj"] = ("BF16", (E, H, 2 * I))
            t[p + "mlp.experts.down_proj"] = ("BF16", (E, I, H))
        else:
            t[p + "mlp.experts.gate_up_proj_blocks"] = ("U8", (E, 2 * I, H // 32, 16))
            t[p + "mlp.experts.gate_up_proj_scales"] = ("U8", (E, 2 * I, H // 32))
            t[p + "mlp.experts.down_proj_blocks"] = ("U8", (E, H, I // 32, 16))
            t[p + "mlp.experts.down_proj_scales"] = ("U8", (E, H, I // 32))
    return t


# dense (dequantized) checkpoints may carry their float tensors in these dtypes too
FLOAT_DTYPES = ("BF16", "F16", "F32")


class HFCheckpoint:
    """A gpt-oss checkpoint in the Hugging Face layout: config.json, safetensors shards."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path} is not a directory")
        hf = _read_json(self.path / "config.json", "config.json missing")
        gen_path = self.path / "generation_config.json"
        gen = _read_json(gen_path, "") if gen_path.exists() else None
        try:
            self.config = GptOssConfig.from_hf(hf, gen)
        except ConfigError as e:
            raise CheckpointError(f"{self.path / 'config.json'}: {e}") from None
        self.hf_config = hf
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        self._open_shards()
        self.dense_experts = "model.layers.0.mlp.experts.gate_up_proj" in self.where
        self._validate()

    def _open_shards(self) -> None:
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            wmap = _read_json(index, "").get("weight_map")
            if not isinstance(wmap, dict):
                raise CheckpointError(f"{index} has no weight_map")
            shards = sorted(set(wmap.values()))
        elif (self.path / "model.safetensors").exists():
            wmap, shards = None, ["model.safetensors"]
        else:
            raise CheckpointError(f"{self.path} holds no model.safetensors.index.json or model.safetensors: "
                                  "no weights to convert")
        for shard in shards:
            if not (self.path / shard).exists():
                raise CheckpointError(f"shard {shard} listed in the index is missing from {self.path}: "
                                      "the download is incomplete; fetch it again")
            try:
                self.files[shard] = SafetensorsFile(self.path / shard)
            except SafetensorsError as e:
                raise CheckpointError(str(e)) from None
        for shard, f in self.files.items():
            for name in f.tensors:
                self.where[name] = shard
        if wmap:
            for name, shard in wmap.items():
                if self.where.get(name) != shard:
                    raise CheckpointError(f"the index puts {name} in {shard}, but that file does not hold it")

    def _validate(self) -> None:
        for name, (dtype, shape) in expected_tensors(self.config, self.dense_experts).items():
            if name not in self.where:
                raise CheckpointError(f"tensor {name} is missing from the checkpoint at {self.path}")
            info = self.files[self.where[name]].tensors[name]
            ok_dtype = info.dtype == dtype or (dtype == "BF16" and info.dtype in FLOAT_DTYPES)
            if not ok_dtype or info.shape != shape:
                raise CheckpointError(f"tensor {name} in {self.where[name]} is {info.dtype}{list(info.shape)}, "
                                      f"expected {dtype}{list(shape)} for this config")

    def rows(self, name: str) -> int:
        """The length of a tensor's first axis."""
        return self.files[self.where[name]].tensors[name].shape[0]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of a tensor; float tensors come back as float32, others raw."""
        f = self.files[self.where[name]]
        raw = f.read(name, start, stop)
        dtype = f.tensors[name].dtype
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if dtype in ("F16", "F32"):
            return raw.astype(np.float32)
        return raw

    def read_bf16_bits(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Raw bf16 bits when the tensor is stored as bf16 (lossless copy), else None."""
        f = self.files[self.where[name]]
        return f.read(name, start, stop) if f.tensors[name].dtype == "BF16" else None
