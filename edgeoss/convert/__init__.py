"""`edgeoss convert`: a Hugging Face gpt-oss checkpoint -> an edgeoss model directory; with the
Hub download (hub.py), the HF reader (checkpoint.py), the quantizers and synthetic checkpoints.
Imports format and config; never memory, engine, chat, server or cli.

Streams tensor by tensor (a chunk of rows at a time) so memory stays far below the model's
size, writes into a hidden temporary directory, verifies it, and only then renames it into
place: an interrupted or failed conversion never leaves anything at OUT that would load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import EdgeossError
from ..format import integrity
from ..format import model_dir as fmt
from ..config import GptOssConfig
from ..format.safetensors import f32_to_bf16_bits
from .checkpoint import HFCheckpoint
from .quantize import hf_to_kernel_order, quantize_mxfp4, quantize_q4, quantize_q8
from .vocab import bundle_vocab, has_tokenizer

TOKENIZER_IDS = 200019  # ids gpt-oss's tokenizer produces (its embedding has 201,088 rows)

__all__ = ["convert", "ConvertError"]

ROW_CHUNK_BYTES = 32 << 20  # float32 bytes of source rows handled at once


class ConvertError(EdgeossError):
    """Conversion cannot proceed; the message says why and what to do."""


class _Writer:
    """Positional writes into weights.bin at the offsets the layout assigned; hashes what it writes
    (format/integrity.py: every tensor part and every expert is checksummed, no second read)."""

    def __init__(self, path: Path, size: int, progress, tensors: dict):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self.fd, size)
        self.progress = progress
        self.hasher = integrity.SpanHasher(integrity.spans(tensors))

    def write(self, offset: int, arr: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], offset + done)
        self.hasher.feed(offset, data)
        if self.progress is not None:
            self.progress.update(len(data))

    def record_checksums(self, tensors: dict) -> None:
        """Put every span's checksum into the manifest's tensor entries (after the last write)."""
        for span, digest in zip(self.hasher.spans, self.hasher.digests()):
            integrity.record(tensors, span, digest)

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def _write_matrix(w: _Writer, entry: dict, ck: HFCheckpoint, sources: list[str]) -> None:
    """Write a matrix whose rows are the concatenated rows of `sources` (qkv fuses three)."""
    mtype, (_, cols) = entry["type"], entry["shape"]
    parts = entry["parts"]
    row0 = 0
    for src in sources:
        rows = ck.rows(src)
        step = max(1, ROW_CHUNK_BYTES // (cols * 4))
        for a in range(0, rows, step):
            b = min(rows, a + step)
            r = row0 + a
            if mtype == "bf16":
                bits = ck.read_bf16_bits(src, a, b)
                if bits is None:  # an f16/f32 source: round to bf16
                    bits = f32_to_bf16_bits(ck.read(src, a, b))
                w.write(parts["data"]["offset"] + r * cols * 2, bits)
                continue
            x = ck.read(src, a, b)
            if not np.all(np.isfinite(x)):
                raise ConvertError(f"tensor {src} holds NaN or infinite values (rows {a}-{b}): "
                                   "the checkpoint is damaged")
            qs, d = quantize_q8(x) if mtype == "q8" else quantize_q4(x)
            w.write(parts["qs"]["offset"] + r * (qs.nbytes // (b - a)), qs)
            w.write(parts["scales"]["offset"] + r * (d.nbytes // (b - a)), d)
        row0 += rows


def _write_vector(w: _Writer, entry: dict, ck: HFCheckpoint, sources: list[str]) -> None:
    v = np.concatenate([ck.read(s).reshape(-1) for s in sources]).astype(np.float32)
    w.write(entry["parts"]["data"]["offset"], v)


def _check_scales(name: str, scales: np.ndarray) -> None:
    if np.any(scales == 255):
        raise ConvertError(f"tensor {name} has an e8m0 scale of 255 (NaN): the checkpoint is damaged")


def _write_experts(w: _Writer, entry: dict, ck: HFCheckpoint, layer: int) -> None:
    p = f"model.layers.{layer}.mlp.experts."
    base, stride, parts = entry["offset"], entry["stride"], entry["parts"]
    for e in range(entry["count"]):
        at = base + e * stride
        for proj in ("gate_up", "down"):
            if ck.dense_experts:  # stored [in, out]: quantize the transposed [out, in] rows
                blocks, scales = quantize_mxfp4(ck.read(p + f"{proj}_proj", e, e + 1)[0].T)
            else:
                blocks = hf_to_kernel_order(ck.read(p + f"{proj}_proj_blocks", e, e + 1)[0])
                scales = ck.read(p + f"{proj}_proj_scales", e, e + 1)[0]
                _check_scales(p + f"{proj}_proj_scales", scales)
            bias = ck.read(p + f"{proj}_proj_bias", e, e + 1)[0]
            w.write(at + parts[f"{proj}_blocks"]["offset"], blocks)
            w.write(at + parts[f"{proj}_scales"]["offset"], scales)
            w.write(at + parts[f"{proj}_bias"]["offset"], bias.astype(np.float32))


def _sources(cfg: GptOssConfig) -> dict[str, list[str]]:
    """edgeoss tensor name -> the checkpoint tensors it is made of."""
    m = {"embed": ["model.embed_tokens.weight"], "norm": ["model.norm.weight"], "lm_head": ["lm_head.weight"]}
    for i in range(cfg.num_hidden_layers):
        p, n = f"model.layers.{i}.", fmt.layer_tensor_names(i)
        a = p + "self_attn."
        m.update({
            n["attn_norm"]: [p + "input_layernorm.weight"],
            n["qkv"]: [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"],
            n["qkv_bias"]: [a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"],
            n["o"]: [a + "o_proj.weight"], n["o_bias"]: [a + "o_proj.bias"], n["sinks"]: [a + "sinks"],
            n["mlp_norm"]: [p + "post_attention_layernorm.weight"],
            n["router"]: [p + "mlp.router.weight"], n["router_bias"]: [p + "mlp.router.bias"],
        })
    return m


def _verify(out: Path, ck: HFCheckpoint) -> None:
    """Re-open what was written and compare the first and last expert of the first and last
    layer bit for bit with the source: catches layout and offset mistakes before the rename."""
    model = fmt.ModelFiles(out)
    cfg = ck.config
    for layer in sorted({0, cfg.num_hidden_layers - 1}):
        name = fmt.layer_tensor_names(layer)["experts"]
        blob, offs = model.experts(name), model.expert_part_offsets(name)
        parts = model.tensors[name]["parts"]
        for e in sorted({0, cfg.num_local_experts - 1}):
            if ck.dense_experts:
                continue
            src = hf_to_kernel_order(ck.read(f"model.layers.{layer}.mlp.experts.down_proj_blocks", e, e + 1)[0])
            got = blob[e, offs["down_blocks"]:offs["down_blocks"] + parts["down_blocks"]["nbytes"]]
            if not np.array_equal(got, src.reshape(-1)):
                raise ConvertError(f"verification failed: layer {layer} expert {e} differs from the source")
    del model


DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def _terminate_unwinds():
    """SIGTERM (kill, a service manager, a container stopping) raises SystemExit(143) while
    converting, like Ctrl-C raises KeyboardInterrupt, so the temporary directory is removed
    rather than left behind by the default action. Main thread only (where Python runs signal
    handlers); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        print("edgeoss: convert terminated (SIGTERM); nothing was written at OUT", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def convert(src: str, out: str | os.PathLike, preset: str = "q8", force: bool = False,
            no_tokenizer: bool = False, revision: str | None = None, token: str | None = None,
            progress: bool = True) -> Path:
    """Convert `src` (directory or Hugging Face repo id) into an edgeoss model at `out`."""
    from .hub import resolve_checkpoint

    if preset not in fmt.PRESETS:
        raise ConvertError(f"unknown preset {preset!r}; choose one of {', '.join(fmt.PRESETS)}")
    out = Path(out).expanduser().absolute()
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; choose another output directory or pass --force "
                           "to replace it (it is replaced only once the new model is complete)")
    ck = HFCheckpoint(resolve_checkpoint(src, revision, token))
    return convert_checkpoint(ck, out, preset, no_tokenizer=no_tokenizer, source=src, revision=revision,
                              progress=progress)


def convert_checkpoint(ck, out: Path, preset: str = "q8", no_tokenizer: bool = False, source=None,
                       revision: str | None = None, progress: bool = True) -> Path:
    """Convert an opened checkpoint (HFCheckpoint, or anything with its config, path, rows,
    read, read_bf16_bits and dense_experts: convert.synthetic's) into an edgeoss model at `out`,
    which the caller has checked may be written (absent, or --force)."""
    out = Path(out).expanduser().absolute()
    src = str(ck.path) if source is None else source
    cfg = ck.config
    if not no_tokenizer and not has_tokenizer(ck.path) and cfg.vocab_size < TOKENIZER_IDS:
        raise ConvertError(f"{ck.path} has no tokenizer and its vocabulary of {cfg.vocab_size} ids is smaller than "
                           f"gpt-oss's ({TOKENIZER_IDS}): pass --no-tokenizer to convert it without one (the model "
                           "is then driven with token ids only)")
    layout = fmt.plan_layout(cfg, preset)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with _terminate_unwinds():
        tmp.mkdir()
        return _convert_into(tmp, out, src, ck, cfg, layout, preset, no_tokenizer, revision, progress)


def _convert_into(tmp: Path, out: Path, src, ck: HFCheckpoint, cfg: GptOssConfig, layout, preset: str,
                  no_tokenizer: bool, revision, progress: bool) -> Path:
    """Write the model into `tmp`, verify it, rename it to `out`; on any failure or interruption
    remove `tmp` (nothing at `out` changes) and re-raise: a full disk as a ConvertError."""
    t0 = time.time()
    try:
        vocab = None
        if not no_tokenizer:
            digest = bundle_vocab(ck.path, tmp / fmt.VOCAB_FILE)
            vocab = {"file": fmt.VOCAB_FILE, "encoding": "o200k_harmony", "sha256": digest}
        bar = None
        tty = sys.stderr.isatty()
        if progress:   # a bar on a terminal; in a log, one line once the stage is done
            from tqdm import tqdm
            bar = tqdm(total=layout.size, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=f"convert {preset}", dynamic_ncols=True, file=sys.stderr, disable=not tty)
        t_write = time.time()
        w = _Writer(tmp / fmt.WEIGHTS, layout.size, bar, layout.tensors)
        try:
            sources = _sources(cfg)
            for name, entry in layout.tensors.items():
                if entry["type"] == "mxfp4_experts":
                    _write_experts(w, entry, ck, int(name.split(".")[1]))
                elif entry["type"] == "f32":
                    _write_vector(w, entry, ck, sources[name])
                else:
                    _write_matrix(w, entry, ck, sources[name])
            w.record_checksums(layout.tensors)
        finally:
            w.close()
            if bar is not None:
                bar.close()
        if progress and not tty:
            print(f"convert {preset}: {layout.size / 1e6:.1f} MB written in {time.time() - t_write:.1f} s",
                  file=sys.stderr, flush=True)
        manifest = {
            "format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, "preset": preset,
            "alignment": fmt.ALIGN, "weights_file": fmt.WEIGHTS, "weights_bytes": layout.size,
            "config": cfg.to_dict(), "tokenizer": vocab,
            "source": {"path": str(src), "revision": revision,
                       "experts": "dense (quantized to mxfp4)" if ck.dense_experts else "mxfp4 (copied)"},
            "tensors": layout.tensors,
        }
        (tmp / fmt.MANIFEST).write_text(json.dumps(manifest, indent=1))
        _verify(tmp, ck)
        if out.exists():  # --force: the old model goes only now that the new one is complete
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise ConvertError(f"cannot write {out}: {e.strerror} (the model needs {layout.size / 1e9:.2f} GB in "
                               f"{out.parent}); free some space or choose another OUT. Nothing was written "
                               "there.") from None
        raise
    if progress:
        print(f"wrote {out} ({layout.size / 1e9:.2f} GB, preset {preset}) in {time.time() - t0:.1f} s")
    return out

