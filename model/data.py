"""Data pipeline: text sources -> offline-trained tokenizer -> packed, memory-mapped token arrays.

prepare_dataset: read the documents -> document-level train/val split -> tokenizer (byte-level BPE trained
on the train split only, plain bytes, or a hub tokenizer) -> `datasets.map` tokenization -> each split packed
into one stream, documents joined by an end-of-document token -> .npy files in the cache dir, opened as
memmaps. The cache key covers (corpus content, tokenizer, vocab size, split settings), so a second call only
hashes the corpus and opens the arrays; a file lock makes parallel trials share one build.

Sources: 'stdlib' = the running interpreter's standard-library source (~12 MB of real text, no download),
one document per .py file; 'prose' = the shipped English prose of model/corpora/prose.txt (13.5 KB, public
domain: the out-of-distribution text of System-2 evaluation, see model/corpora/README.md); a .txt file (one
document per blank-line-separated block, so that a single book or dump still splits at document level), a
.jsonl file (field `text_field`), a .parquet file (column `text_field`), or a folder of these (recursive, in
sorted relative-path order); 'hf:NAME[:CONFIG]' = a hub dataset's train split, streamed (cluster users; hub
datasets are taken as immutable, keyed by name).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock
from pydantic import Field, model_validator

from model.config import FrozenModel

if TYPE_CHECKING:  # torch loads with the training stack; the configs here are read by the CLI without it
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the on-disk layout or the packing changes: old cache entries are then ignored
SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".parquet")
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
EOD_TOKEN = "<|endoftext|>"
PROSE_SOURCE = "prose"  # the shipped out-of-distribution text (model/corpora/README.md: what, licence, size)
PROSE_PATH = Path(__file__).resolve().parent / "corpora" / "prose.txt"
HUB_EOD_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]")


class DataConfig(FrozenModel):
    """Where tokens come from. `source`: 'stdlib' (the interpreter's own standard-library source, no
    download), a local path (.txt/.jsonl/.parquet file or a folder of them), or 'hf:NAME[:CONFIG]' (a hub
    dataset, streamed; cluster users only)."""

    source: str = "stdlib"
    text_field: str = "text"
    tokenizer: str = Field("bpe", description="'bpe' (trained offline), 'byte', or a hub tokenizer name")
    vocab_size: int = Field(4096, ge=256)
    val_fraction: float = Field(0.02, gt=0, lt=0.5)
    split_seed: int = 0
    max_documents: int | None = Field(None, ge=1)
    cache_dir: str | None = None


class EvalTextConfig(FrozenModel):
    """Text a trained model is evaluated on besides its own validation split: out-of-distribution text for
    System-2 evaluation. Tokenized with the model's own tokenizer, every document of it is evaluation text
    (no train/validation split). `source`: 'prose' (shipped, offline: model/corpora/prose.txt), a local
    .txt/.jsonl/.parquet file or folder, or 'hf:NAME[:CONFIG]' (a hub dataset's `split`, streamed; online
    users; needs max_documents so that only that many documents are fetched)."""

    source: str = Field(PROSE_SOURCE, min_length=1)
    text_field: str = "text"
    split: str = Field("test", min_length=1, description="the hub dataset's split (hub sources only)")
    max_documents: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _bounded_hub(self) -> EvalTextConfig:
        if self.source.startswith("hf:") and self.max_documents is None:
            raise ValueError(f"a hub source ({self.source!r}) needs max_documents (it is streamed)")
        return self


SHIPPED_OOD = EvalTextConfig()  # the default out-of-distribution text: the shipped prose, offline


class DataError(ValueError):
    """A problem with the data or its configuration, worded for the person who configured it."""


# ----------------------------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[Path, tuple[Path, ...]]:
    """(root, .py files) of the standard library minus its tests; cached: listing is most of a cache hit."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in STDLIB_EXCLUDED_DIRS]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return root, tuple(sorted(files, key=lambda p: p.relative_to(root).as_posix()))


def _source_files(source: str) -> tuple[Path, tuple[Path, ...]]:
    """(root, files in corpus order) of a local or stdlib source."""
    if source == "stdlib":
        return _stdlib_files()
    if source == PROSE_SOURCE:
        return PROSE_PATH.parent, (PROSE_PATH,)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {source!r} does not exist (expected 'stdlib', 'hf:NAME[:CONFIG]', "
            f"or a {'/'.join(SUPPORTED_EXTENSIONS)} file or a folder of them)"
        )
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise DataError(
                f"unsupported file type {path.suffix!r} for {source!r}: use {SUPPORTED_EXTENSIONS}"
            )
        return path.parent, (path,)
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS]
    if not files:
        raise DataError(f"folder {source!r} holds no {'/'.join(SUPPORTED_EXTENSIONS)} files")
    return path, tuple(sorted(files, key=lambda p: p.relative_to(path).as_posix()))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from None


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    """The documents of one file (see the module docstring for what a document is per format)."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        yield _read_text(path)
    elif suffix == ".txt":
        yield from re.split(r"\n\s*\n", _read_text(path))
    elif suffix == ".jsonl":
        for lineno, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise DataError(f"{path}:{lineno}: no string field {text_field!r} (set data.text_field)")
            yield record[text_field]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        if text_field not in columns:
            raise DataError(f"{path}: no column {text_field!r} (set data.text_field; columns: {columns})")
        yield from (t for t in pq.read_table(path, columns=[text_field]).column(0).to_pylist() if t)


def _hub_documents(cfg: DataConfig | EvalTextConfig, split: str = "train") -> Iterator[str]:
    """A hub dataset's split, streamed: nothing beyond max_documents is downloaded."""
    import datasets

    _, name, *config = cfg.source.split(":", 2)
    if not name:
        raise DataError(f"data source {cfg.source!r}: expected 'hf:NAME' or 'hf:NAME:CONFIG'")
    for row in datasets.load_dataset(name, config[0] if config else None, split=split, streaming=True):
        if not isinstance(row.get(cfg.text_field), str):
            raise DataError(
                f"hub dataset {name!r} has no string field {cfg.text_field!r} (set data.text_field)"
            )
        yield row[cfg.text_field]


def load_documents(cfg: DataConfig | EvalTextConfig, quiet: bool = False) -> list[str]:
    """The corpus as a list of non-blank documents in a deterministic order, at most max_documents."""
    from tqdm.auto import tqdm

    if cfg.source.startswith("hf:"):
        split = cfg.split if isinstance(cfg, EvalTextConfig) else "train"
        raw: Iterator[str] = _hub_documents(cfg, split)
    else:
        _, files = _source_files(cfg.source)
        raw = itertools.chain.from_iterable(_file_documents(f, cfg.text_field) for f in files)
    docs = (d for d in raw if d and not d.isspace())
    bar = tqdm(docs, desc="reading documents", total=cfg.max_documents, disable=quiet, leave=False)
    documents = list(itertools.islice(bar, cfg.max_documents))
    if not documents:
        raise DataError(f"empty corpus: data source {cfg.source!r} holds no non-blank documents")
    return documents


def corpus_digest(cfg: DataConfig) -> str:
    """Hash of everything that determines the documents: file paths and bytes (not parsed text: cheap, ~0.1 s
    for the stdlib), text_field and max_documents. Hub sources are identified by their name."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT_VERSION, cfg.text_field, cfg.max_documents]).encode())
    if cfg.source.startswith("hf:"):
        h.update(cfg.source.encode())
    else:
        root, files = _source_files(cfg.source)
        for f in files:
            content = f.read_bytes()
            h.update(f"{f.relative_to(root).as_posix()}\0{len(content)}\0".encode())
            h.update(content)
    return h.hexdigest()


def is_validation(text: str, split_seed: int, val_fraction: float) -> bool:
    """Document-level split from a seeded hash of the content: independent of corpus order, and copies of a
    document always land on the same side (no train/val leakage through duplicates)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=str(split_seed).encode()).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


# -------------------------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes as ids (vocab 256). The end-of-document id is 0 (NUL), a byte plain text never holds."""

    name = "byte"
    vocab_size = 256
    eod_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")  # a model's sample may cut a character

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]


class HFTokenizer:
    """A `tokenizers.Tokenizer` (our trained BPE or a hub one) behind the small interface above."""

    def __init__(self, tok: Any, name: str, eod_token: str) -> None:
        self.tok, self.name, self.eod_token = tok, name, eod_token
        self.vocab_size: int = tok.get_vocab_size()
        self.eod_id: int = tok.token_to_id(eod_token)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]


Tokenizer = ByteTokenizer | HFTokenizer  # both: name, vocab_size, eod_id, encode, decode, encode_batch


def train_bpe(texts: Sequence[str], vocab_size: int, quiet: bool = False) -> HFTokenizer:
    """Byte-level BPE (GPT-2 style: any text round-trips, no unknown token) with one end-of-document token."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise DataError(f"bpe needs vocab_size >= 257 (256 bytes + end-of-document), got {vocab_size}")
    tok = RawTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=not quiet,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    if tok.get_vocab_size() < vocab_size:
        raise DataError(
            f"vocab_size {vocab_size} is larger than this corpus supports: BPE training on the train split "
            f"reached only {tok.get_vocab_size()} tokens; set data.vocab_size <= {tok.get_vocab_size()}"
        )
    return HFTokenizer(tok, "bpe", EOD_TOKEN)


def _load_hub_tokenizer(name: str) -> HFTokenizer:
    """A hub tokenizer by name (cluster users), or a local `tokenizer.json` file (works offline)."""
    from tokenizers import Tokenizer as RawTokenizer

    tok = RawTokenizer.from_file(name) if Path(name).is_file() else RawTokenizer.from_pretrained(name)
    eod = next((t for t in HUB_EOD_TOKENS if tok.token_to_id(t) is not None), None)
    if eod is None:
        raise DataError(f"hub tokenizer {name!r} has none of the end-of-document tokens {HUB_EOD_TOKENS}")
    return HFTokenizer(tok, name, eod)


def _tokenizer_key(cfg: DataConfig) -> str:
    """The tokenizer's part of the cache key: vocab_size only matters for BPE (the others bring their own)."""
    if cfg.tokenizer == "bpe":
        return f"bpe{cfg.vocab_size}"
    if Path(cfg.tokenizer).is_file():  # a local tokenizer file: keyed by its content, not its path
        return "file" + hashlib.sha256(Path(cfg.tokenizer).read_bytes()).hexdigest()[:16]
    return cfg.tokenizer


# ---------------------------------------------------------------------------------------------- building


def resolve_cache_dir(cfg: DataConfig | None = None) -> Path:
    """cfg.cache_dir, else $EBTSCALE_CACHE_DIR, else ~/.cache/ebtscale (the project's one cache folder)."""
    path = (cfg.cache_dir if cfg else None) or os.environ.get("EBTSCALE_CACHE_DIR") or "~/.cache/ebtscale"
    return Path(path).expanduser()


def fingerprint(cfg: DataConfig) -> str:
    """Cache key of the packed arrays: readable prefix + hash of corpus, tokenizer and split settings."""
    key = [FORMAT_VERSION, corpus_digest(cfg), _tokenizer_key(cfg), cfg.val_fraction, cfg.split_seed]
    digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=8).hexdigest()
    name = f"stdlib{sys.version_info.major}{sys.version_info.minor}" if cfg.source == "stdlib" else cfg.source
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{Path(name).stem}-{_tokenizer_key(cfg)}").strip("_")[-48:]
    return f"{name}-{digest}"


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Readers (other processes) see either no file or the complete file, never a partial one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()


def _tokenize_split(texts: list[str], tokenizer: Tokenizer, split: str, key: str) -> np.ndarray:
    """One packed stream: every document's ids followed by the end-of-document id."""
    import datasets
    import pyarrow.compute as pc

    eod = [tokenizer.eod_id]
    docs = datasets.Dataset.from_dict({"text": texts})
    ids = docs.map(
        lambda batch: {"ids": [d + eod for d in tokenizer.encode_batch(batch["text"])]},
        batched=True,
        remove_columns=["text"],
        new_fingerprint=f"{key}-{split}",  # in-memory dataset: skips hashing the closure
        desc=f"tokenizing {split}",
    )
    return pc.list_flatten(ids.data.column("ids")).to_numpy()


def _build(cfg: DataConfig, out: Path, key: str, quiet: bool) -> None:
    """Read, split, get the tokenizer, tokenize, write out/ (meta.json last: it marks a complete build)."""
    start = time.perf_counter()
    docs = load_documents(cfg, quiet)
    val_mask = [is_validation(d, cfg.split_seed, cfg.val_fraction) for d in docs]
    splits = {
        "train": [d for d, v in zip(docs, val_mask, strict=True) if not v],
        "val": [d for d, v in zip(docs, val_mask, strict=True) if v],
    }
    if not splits["train"] or not splits["val"]:
        raise DataError(
            f"the document-level split of {len(docs)} documents (val_fraction={cfg.val_fraction}) leaves "
            f"{len(splits['train'])} train and {len(splits['val'])} validation documents; both need at least "
            "one: use more documents or a larger val_fraction"
        )
    tokenizer: Tokenizer
    if cfg.tokenizer == "bpe":
        tokenizer = train_bpe(splits["train"], cfg.vocab_size, quiet)
    elif cfg.tokenizer == "byte":
        tokenizer = ByteTokenizer()
    else:
        tokenizer = _load_hub_tokenizer(cfg.tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, HFTokenizer):  # kept beside the arrays: a cache hit needs no training/network
        _atomic_write(out / "tokenizer.json", lambda f: f.write(tokenizer.tok.to_str().encode()))
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    tokens = {}
    with _datasets_progress(not quiet):
        for split, texts in splits.items():
            stream = _tokenize_split(texts, tokenizer, split, key).astype(dtype)
            _atomic_write(out / f"{split}.npy", lambda f, a=stream: np.save(f, a))
            tokens[split] = len(stream)
    meta = {
        "fingerprint": key,
        "format_version": FORMAT_VERSION,
        "source": cfg.source,
        "config": cfg.model_dump(),
        "tokenizer": tokenizer.name,
        "eod_token": getattr(tokenizer, "eod_token", None),
        "vocab_size": tokenizer.vocab_size,
        "documents": {split: len(texts) for split, texts in splits.items()},
        "tokens": tokens,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    _atomic_write(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    log.info("data: built %s in %.1f s: %s tokens", key, meta["build_seconds"], tokens)


def prepare_dataset(
    cfg: DataConfig, context_length: int, cache_dir: Path | None = None, quiet: bool = False
) -> TokenDataset:
    """The packed train/val token streams of cfg, built once per cache key and reused afterwards (also by
    other processes preparing the same key at the same time: one builds under the lock, the others wait)."""
    key = fingerprint(cfg)
    out = Path(cache_dir or resolve_cache_dir(cfg)) / "data" / key
    cache_hit = (out / "meta.json").exists()
    if not cache_hit:
        out.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{out}.lock"):
            cache_hit = (out / "meta.json").exists()  # someone else may have built it while we waited
            if not cache_hit:
                _build(cfg, out, key, quiet)
    meta = json.loads((out / "meta.json").read_text())
    tokenizer: Tokenizer = ByteTokenizer()
    if meta["tokenizer"] != "byte":
        from tokenizers import Tokenizer as RawTokenizer

        tokenizer = HFTokenizer(
            RawTokenizer.from_file(str(out / "tokenizer.json")), meta["tokenizer"], meta["eod_token"]
        )
    train, val = (np.load(out / f"{split}.npy", mmap_mode="r") for split in ("train", "val"))
    return TokenDataset(train, val, context_length, tokenizer, fingerprint=key, cache_hit=cache_hit, path=out)


def add_eval_text(
    data: TokenDataset, cfg: EvalTextConfig, split: str = "ood", quiet: bool = False
) -> TokenDataset:
    """`data` with the text of `cfg` as the evaluation-only split `split`: its documents tokenized with the
    dataset's own tokenizer and packed like the other splits (documents joined by the end-of-document id).
    Not cached: the shipped prose is small, a hub source is bounded by max_documents."""
    documents = load_documents(cfg, quiet)
    ids = data.tokenizer.encode_batch(documents)
    dtype = data.val.dtype
    stream = np.fromiter(itertools.chain.from_iterable([*d, data.tokenizer.eod_id] for d in ids), dtype=dtype)
    return data.with_eval_split(split, stream)


# ------------------------------------------------------------------------------------------------ access


class TokenDataset:
    """Packed train/val token streams cut into windows of context_length + 1 tokens (stride context_length).

    Batches are addressed by index, never by iterator state: train_indices(step, ...) is a pure function, so
    a resumed run sees exactly the batches it would have seen, and tokens seen = step * batch * T exactly."""

    def __init__(
        self,
        train: np.ndarray,
        val: np.ndarray,
        context_length: int,
        tokenizer: Tokenizer,
        fingerprint: str = "",
        cache_hit: bool = False,
        path: Path | None = None,
        eval_splits: dict[str, np.ndarray] | None = None,
    ) -> None:
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.train, self.val, self.context_length, self.tokenizer = train, val, context_length, tokenizer
        self.vocab_size: int = tokenizer.vocab_size
        self.fingerprint, self.cache_hit, self.path = fingerprint, cache_hit, path
        self.eval_splits: dict[str, np.ndarray] = dict(eval_splits or {})  # extra evaluation-only streams
        self._permutations: dict[tuple[int, int], np.ndarray] = {}
        hints = {"train": "more documents", "val": "a larger val_fraction, more documents"}
        for split in ("train", "val", *self.eval_splits):
            if split in ("train", "val") and split in self.eval_splits:
                raise ValueError(f"evaluation split {split!r} would shadow the dataset's own {split} split")
            if self.num_windows(split) < 1:
                raise DataError(
                    f"the {split} split has {len(self._tokens(split))} tokens, fewer than one window of "
                    f"context_length + 1 = {context_length + 1}; use {hints.get(split, 'more text')} or a "
                    "shorter context"
                )

    def with_eval_split(self, name: str, tokens: np.ndarray) -> TokenDataset:
        """The same dataset with one more evaluation-only split: a packed stream in this tokenizer's ids."""
        return TokenDataset(
            self.train,
            self.val,
            self.context_length,
            self.tokenizer,
            self.fingerprint,
            self.cache_hit,
            self.path,
            {**self.eval_splits, name: tokens},
        )

    def _tokens(self, split: str) -> np.ndarray:
        if split == "train":
            return self.train
        if split == "val":
            return self.val
        if split not in self.eval_splits:
            raise ValueError(f"split must be one of {['train', 'val', *self.eval_splits]}, got {split!r}")
        return self.eval_splits[split]

    def num_windows(self, split: str) -> int:
        return max(len(self._tokens(split)) - 1, 0) // self.context_length

    def windows(self, split: str, indices: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), int64 (n, T): x = tokens[i*T : i*T+T], y = the same window shifted by one token, with
        IGNORE_INDEX where the next token is the end-of-document id: as in the EBT authors' code (their pad
        id is the EOS id), no loss is taken on predicting a document's end, for either family."""
        import torch

        from model.loss import IGNORE_INDEX  # torch: imported where a batch is built, not by config readers

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n, t = self.num_windows(split), self.context_length
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"window index out of range [0, {n}) for split {split!r}")
        rows = torch.from_numpy(self._tokens(split)[idx[:, None] * t + np.arange(t + 1)].astype(np.int64))
        targets = rows[:, 1:].clone()
        targets[targets == self.tokenizer.eod_id] = IGNORE_INDEX
        return rows[:, :-1].contiguous(), targets

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        if (seed, epoch) not in self._permutations:
            if len(self._permutations) >= 2:  # a batch spans at most two epochs in practice
                self._permutations.pop(next(iter(self._permutations)))
            rng = np.random.default_rng([epoch, seed % 2**64])
            self._permutations[seed, epoch] = rng.permutation(self.num_windows("train"))
        return self._permutations[seed, epoch]

    def train_indices(self, step: int, global_batch: int, seed: int) -> np.ndarray:
        """Train windows of optimizer step `step`: global sample k = step*global_batch + r is position
        k % N of epoch k // N's seeded permutation of the N windows (each window once per epoch)."""
        if step < 0 or global_batch < 1:
            raise ValueError(f"need step >= 0 and global_batch >= 1, got {step}, {global_batch}")
        epoch, pos = np.divmod(
            step * global_batch + np.arange(global_batch, dtype=np.int64), self.num_windows("train")
        )
        out = np.empty(global_batch, dtype=np.int64)
        for e in np.unique(epoch):
            mask = epoch == e
            out[mask] = self._permutation(seed, int(e))[pos[mask]]
        return out

    def eval_indices(self, n: int, split: str = "val") -> np.ndarray:
        """min(n, num_windows(split)) evenly spaced windows of an evaluation split (the validation split or an
        evaluation-only one): the same set on every call."""
        total = self.num_windows(split)
        n = max(min(n, total), 0)
        return np.arange(n, dtype=np.int64) * total // max(n, 1)
