"""Data pipeline: determinism, document-level split, tokenizers, caching, windows, errors, formats."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import model.data as data
from model.data import ByteTokenizer, DataConfig, DataError, TokenDataset, is_validation, prepare_dataset

WORDS = ["the", "cat", "sat", "on", "a", "mat", "naïve", "über", "café", "日本語", "données", "🙂"]
WORDS += ["energy", "model", "token", "scale", "loss"]
UNICODE_TEXT = "Grüße, 世界! naïve café — 🙂 emoji\n\ttabs  and   spaces\r\nend \u00a0nbsp"


def make_docs(n: int, seed: int = 0, words: list[str] = WORDS) -> list[str]:
    """n distinct multi-line documents of random words (the index makes every one unique)."""
    rng = random.Random(seed)
    return [
        f"doc {i}: " + "\n".join(" ".join(rng.choices(words, k=12)) for _ in range(rng.randint(1, 4)))
        for i in range(n)
    ]


def write_txt(path: Path, docs: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def config(source: Path, cache: Path, **kw) -> DataConfig:
    kw = {"vocab_size": 320, "val_fraction": 0.2, **kw}
    return DataConfig(source=str(source), cache_dir=str(cache), **kw)


def split_documents(ds: TokenDataset, split: str) -> list[str]:
    """The documents of a packed stream, recovered by cutting at the end-of-document id (byte tokenizer)."""
    stream = np.asarray(ds.train if split == "train" else ds.val)
    assert stream[-1] == ds.tokenizer.eod_id
    chunks = np.split(stream, np.flatnonzero(stream == ds.tokenizer.eod_id) + 1)[:-1]
    return [ds.tokenizer.decode(c[:-1].tolist()) for c in chunks]


# ------------------------------------------------------------------------------------- split & determinism


def test_split_is_deterministic_and_document_level(tmp_path):
    docs = make_docs(200)
    src = write_txt(tmp_path / "corpus.txt", docs)
    a = prepare_dataset(config(src, tmp_path / "c1", tokenizer="byte"), 16, quiet=True)
    b = prepare_dataset(config(src, tmp_path / "c2", tokenizer="byte"), 16, quiet=True)  # a fresh build
    assert not a.cache_hit and not b.cache_hit
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)

    train, val = split_documents(a, "train"), split_documents(a, "val")
    assert sorted(train + val) == sorted(docs)  # every document exactly once, none cut or straddling
    assert not set(train) & set(val)
    assert 0.1 < len(val) / len(docs) < 0.3  # val_fraction=0.2
    assert val == [d for d in docs if is_validation(d, 0, 0.2)]  # corpus order kept inside a split

    other = prepare_dataset(config(src, tmp_path / "c1", tokenizer="byte", split_seed=1), 16, quiet=True)
    assert set(split_documents(other, "val")) != set(val)
    assert other.fingerprint != a.fingerprint


def test_bpe_build_is_deterministic(tmp_path):
    src = write_txt(tmp_path / "corpus.txt", make_docs(150))
    a = prepare_dataset(config(src, tmp_path / "c1"), 16, quiet=True)
    b = prepare_dataset(config(src, tmp_path / "c2"), 16, quiet=True)
    assert a.tokenizer.tok.to_str() == b.tokenizer.tok.to_str()
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    assert a.vocab_size == 320 and a.train.dtype == np.uint16
    assert int(max(a.train.max(), a.val.max())) < a.vocab_size


def test_bpe_is_trained_on_the_train_split_only(tmp_path):
    # "qzxv" appears only in validation documents, many times: a tokenizer that saw them would merge it.
    marked = [d + " qzxv" * 40 for d in make_docs(400, seed=1)]
    val_docs = [d for d in marked if is_validation(d, 0, 0.2)][:5]
    docs = make_docs(100, seed=2) + val_docs
    src = write_txt(tmp_path / "corpus.txt", docs)
    ds = prepare_dataset(config(src, tmp_path / "c"), 16, quiet=True)
    assert len(val_docs) == 5 and all(d in ds.tokenizer.decode(ds.val.tolist()) for d in val_docs)
    assert not [t for t in ds.tokenizer.tok.get_vocab() if "qz" in t or "xv" in t]
    # control: the same corpus with the marked documents in train does learn the marker
    with_marker = data.train_bpe(docs, 320, quiet=True)
    assert [t for t in with_marker.tok.get_vocab() if "qz" in t]


# ------------------------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_tokenizer_round_trip(tmp_path, kind):
    src = write_txt(tmp_path / "corpus.txt", make_docs(150))
    tok = prepare_dataset(config(src, tmp_path / "c", tokenizer=kind), 16, quiet=True).tokenizer
    ids = tok.encode(UNICODE_TEXT)
    assert tok.decode(ids) == UNICODE_TEXT
    assert all(0 <= i < tok.vocab_size for i in ids) and tok.eod_id not in ids
    sample = "the cat sat on a mat naïve über café"
    if kind == "byte":
        assert tok.vocab_size == 256 and tok.encode(sample) == list(sample.encode())
    else:
        assert tok.vocab_size == 320 and len(tok.encode(sample)) < len(sample.encode()) / 2  # it merges


# ------------------------------------------------------------------------------------------------ caching


def test_tokenizer_file_is_kept_beside_the_arrays(tmp_path):
    # a saved tokenizer.json goes through the same loader as hub names (Tokenizer.from_file / from_pretrained)
    trained = data.train_bpe(make_docs(150), 300, quiet=True)
    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text(trained.tok.to_str())
    cfg = config(write_txt(tmp_path / "corpus.txt", make_docs(100)), tmp_path / "c", tokenizer=str(tok_file))
    first = prepare_dataset(cfg, 16, quiet=True)
    assert not first.cache_hit and first.vocab_size == 300
    second = prepare_dataset(cfg, 16, quiet=True)
    assert second.cache_hit and second.vocab_size == 300
    assert second.tokenizer.eod_id == trained.eod_id == first.val[-1]
    assert second.tokenizer.encode(UNICODE_TEXT) == trained.encode(UNICODE_TEXT)
    assert data.fingerprint(cfg) != data.fingerprint(cfg.model_copy(update={"tokenizer": "bpe"}))


def test_second_build_is_a_cache_hit(tmp_path, monkeypatch):
    src = write_txt(tmp_path / "corpus.txt", make_docs(150))
    cfg = config(src, tmp_path / "c")
    first = prepare_dataset(cfg, 16, quiet=True)
    files = sorted(first.path.iterdir())
    assert {f.name for f in files} == {"meta.json", "tokenizer.json", "train.npy", "val.npy"}
    mtimes = [f.stat().st_mtime_ns for f in files]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt on a cache hit")

    monkeypatch.setattr(data, "train_bpe", no_rebuild)
    monkeypatch.setattr(data, "_build", no_rebuild)
    second = prepare_dataset(cfg, 32, quiet=True)  # another context length shares the arrays
    assert not first.cache_hit and second.cache_hit
    assert [f.stat().st_mtime_ns for f in sorted(second.path.iterdir())] == mtimes
    assert isinstance(second.train, np.memmap) and second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.val, second.val)
    assert second.tokenizer.encode(UNICODE_TEXT) == first.tokenizer.encode(UNICODE_TEXT)

    # what changes the data changes the key: the corpus content and the vocab size
    assert data.fingerprint(config(src, tmp_path / "c", vocab_size=400)) != first.fingerprint
    src.write_text(src.read_text().replace("cat", "dog", 1))  # same size, other content
    assert data.fingerprint(cfg) != first.fingerprint


def _prepare_in_subprocess(cfg: DataConfig, barrier, results) -> None:
    barrier.wait()  # both processes start building at the same moment
    ds = prepare_dataset(cfg, 16, quiet=True)
    digest = hashlib.sha256(np.asarray(ds.train).tobytes() + np.asarray(ds.val).tobytes()).hexdigest()
    results.put((ds.cache_hit, digest))


def test_concurrent_builds_share_one_build(tmp_path):
    cfg = config(write_txt(tmp_path / "corpus.txt", make_docs(3000)), tmp_path / "c", vocab_size=1000)
    ctx = mp.get_context("spawn")  # no fork of a process whose tokenizer/torch threads already run
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_subprocess, args=(cfg, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(hit for hit, _ in outcomes) == [False, True]  # one built, the other waited and reused
    assert outcomes[0][1] == outcomes[1][1]
    assert not list((tmp_path / "c" / "data").glob("*/.*.tmp"))


# ------------------------------------------------------------------------------------- windows & indices


def synthetic(n_train: int, n_val: int, context_length: int) -> TokenDataset:
    """Streams whose token at position p is p, so a window's content tells where it came from."""
    train, val = np.arange(n_train, dtype=np.uint32), np.arange(n_val, dtype=np.uint32)
    return TokenDataset(train, val, context_length, ByteTokenizer())


def test_windows_are_shifted_pairs():
    ds = synthetic(1001, 101, 10)
    assert ds.num_windows("train") == 100 and ds.num_windows("val") == 10
    assert synthetic(1000, 101, 10).num_windows("train") == 99  # the last window needs one more target
    x, y = ds.windows("train", [0, 7, 99])
    assert x.shape == y.shape == (3, 10) and x.dtype == y.dtype == torch.int64
    assert x[1].tolist() == list(range(70, 80)) and y[1].tolist() == list(range(71, 81))
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert y[2, -1].item() == 1000  # the final token is reachable
    with pytest.raises(IndexError):
        ds.windows("train", [100])
    with pytest.raises(ValueError, match="split"):
        ds.windows("test", [0])


def test_train_indices_visit_every_window_once_per_epoch():
    ds = synthetic(371, 50, 10)  # 37 windows, not a multiple of the batch
    n, batch = ds.num_windows("train"), 8
    steps = 3 * n // batch + 1
    seen = np.concatenate([ds.train_indices(s, batch, seed=3) for s in range(steps)])
    epochs = [seen[e * n : (e + 1) * n] for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # a pure function of its arguments: a fresh object, any call order, gives the same batch
    fresh = synthetic(371, 50, 10)
    np.testing.assert_array_equal(fresh.train_indices(9, batch, 3), seen[9 * batch : 10 * batch])
    assert not np.array_equal(ds.train_indices(0, batch, 4), seen[:batch])
    x, _ = ds.windows("train", ds.train_indices(0, batch, 3))
    assert x.shape == (batch, 10)


def test_eval_indices_are_fixed_and_evenly_spaced():
    ds = synthetic(500, 1001, 10)  # 100 val windows
    idx = ds.eval_indices(10)
    assert idx.tolist() == list(range(0, 100, 10))
    np.testing.assert_array_equal(ds.eval_indices(10), idx)
    assert ds.eval_indices(1000).tolist() == list(range(100))  # capped at what exists, no duplicates


# ------------------------------------------------------------------------- out-of-distribution evaluation


def test_eval_text_is_a_packed_split_in_the_datasets_own_tokenizer(tmp_path):
    docs = make_docs(120)
    ds = prepare_dataset(config(write_txt(tmp_path / "c.txt", docs), tmp_path / "cache"), 16, quiet=True)
    other = make_docs(30, seed=9, words=["lorem", "ipsum", "dolor", "sit", "amet"])
    text = data.EvalTextConfig(source=str(write_txt(tmp_path / "ood.txt", other)))
    with_ood = data.add_eval_text(ds, text, quiet=True)
    stream = with_ood.eval_splits["ood"]
    chunks = np.split(stream, np.flatnonzero(stream == ds.tokenizer.eod_id) + 1)[:-1]
    assert [ds.tokenizer.decode(c[:-1].tolist()) for c in chunks] == other  # every document, in order
    assert with_ood.num_windows("ood") == (len(stream) - 1) // 16
    idx = with_ood.eval_indices(5, "ood")
    x, _ = with_ood.windows("ood", idx)
    np.testing.assert_array_equal(x[1].numpy(), stream[idx[1] * 16 : idx[1] * 16 + 16])
    assert np.array_equal(with_ood.val, ds.val) and "ood" not in ds.eval_splits  # the original is unchanged
    with pytest.raises(ValueError, match="split must be one of"):
        ds.windows("ood", [0])
    tiny = data.EvalTextConfig(source=str(write_txt(tmp_path / "tiny.txt", ["hi"])))
    with pytest.raises(DataError, match=r"the ood split has .* fewer than one window"):
        data.add_eval_text(ds, tiny, quiet=True)


def test_the_shipped_prose_is_offline_and_absent_from_the_training_corpus():
    assert data.SHIPPED_OOD.source == "prose"
    docs = data.load_documents(data.SHIPPED_OOD, quiet=True)
    assert docs[0].startswith("In Congress, July 4, 1776.") and len(docs) == 42
    assert 10_000 < data.PROSE_PATH.stat().st_size < 20_000  # what model/corpora/README.md says: 13.5 KB
    _, files = data._stdlib_files()
    stdlib = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    for sentence in ("Four score and seven years ago", "With malice toward none", "unalienable Rights"):
        assert sentence not in stdlib


def test_a_hub_eval_text_must_be_bounded():
    with pytest.raises(ValueError, match="needs max_documents"):
        data.EvalTextConfig(source="hf:wikitext:wikitext-2-raw-v1")
    cfg = data.EvalTextConfig(source="hf:wikitext:wikitext-2-raw-v1", max_documents=200, split="test")
    assert cfg.max_documents == 200  # valid; not fetched here (tests run offline)


# ---------------------------------------------------------------------------------------------- sources


def test_jsonl_parquet_and_folder_sources(tmp_path):
    docs = make_docs(120, seed=5)
    folder = tmp_path / "corpus"
    folder.mkdir()
    with open(folder / "a.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs[:60]):
            f.write(json.dumps({"id": i, "body": d}) + "\n")
    pq.write_table(pa.table({"body": docs[60:], "n": list(range(60))}), folder / "b.parquet")
    (folder / "notes.md").write_text("ignored: not a corpus format")

    for source, expected in (
        (folder / "a.jsonl", docs[:60]),
        (folder / "b.parquet", docs[60:]),
        (folder, docs),
    ):
        ds = prepare_dataset(
            config(source, tmp_path / "c", tokenizer="byte", text_field="body", val_fraction=0.3),
            8,
            quiet=True,
        )
        assert sorted(split_documents(ds, "train") + split_documents(ds, "val")) == sorted(expected)


def test_hf_source_streams_at_most_max_documents(tmp_path):
    # `hf:` uses the real datasets.load_dataset(streaming=True); a local dataset folder keeps it offline
    folder = tmp_path / "hub-like"
    folder.mkdir()
    rows = [{"text": f"hub document {i} " * 5} for i in range(200)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(source=f"hf:{folder}", max_documents=50, tokenizer="byte", val_fraction=0.3)
    ds = prepare_dataset(cfg, 8, cache_dir=tmp_path / "c", quiet=True)
    got = split_documents(ds, "train") + split_documents(ds, "val")
    assert sorted(got) == sorted(r["text"] for r in rows[:50])


def test_stdlib_corpus(tmp_path):
    root, files = data._stdlib_files()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel) and "os.py" in rel and len(rel) > 500
    assert not [r for r in rel if {"test", "tests", "idle_test", "site-packages"} & set(r.split("/"))]

    cfg = DataConfig(max_documents=40, tokenizer="byte", val_fraction=0.25, cache_dir=str(tmp_path / "c"))
    ds = prepare_dataset(cfg, 64, quiet=True)
    got = split_documents(ds, "train") + split_documents(ds, "val")
    assert sorted(got) == sorted(f.read_text(encoding="utf-8") for f in files[:40])


# ------------------------------------------------------------------------------------------------ errors


def test_error_empty_corpus(tmp_path):
    src = tmp_path / "empty.txt"
    src.write_text("\n\n   \n\t\n")
    with pytest.raises(DataError, match="empty corpus"):
        prepare_dataset(config(src, tmp_path / "c"), 16, quiet=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="holds no"):
        prepare_dataset(config(tmp_path / "folder", tmp_path / "c"), 16, quiet=True)


def test_error_missing_path_and_unsupported_extension(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(config(tmp_path / "nope.txt", tmp_path / "c"), 16, quiet=True)
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        prepare_dataset(config(tmp_path / "data.csv", tmp_path / "c"), 16, quiet=True)


def test_error_missing_text_field(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "hello"}) + "\n")
    with pytest.raises(DataError, match=r"a\.jsonl:1: no string field 'text'"):
        prepare_dataset(config(tmp_path / "a.jsonl", tmp_path / "c"), 16, quiet=True)
    pq.write_table(pa.table({"content": ["hello"]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="no column 'text'"):
        prepare_dataset(config(tmp_path / "b.parquet", tmp_path / "c"), 16, quiet=True)


def test_error_vocab_too_large(tmp_path):
    src = write_txt(tmp_path / "small.txt", make_docs(60))
    with pytest.raises(DataError, match=r"reached only \d+ tokens; set data.vocab_size <= \d+"):
        prepare_dataset(config(src, tmp_path / "c", vocab_size=5000), 16, quiet=True)
    assert not list((tmp_path / "c" / "data").glob("*/meta.json"))  # nothing half-built is left as a hit


def test_error_validation_split_too_small(tmp_path):
    src = write_txt(tmp_path / "corpus.txt", make_docs(100))
    cfg = config(src, tmp_path / "c", tokenizer="byte", val_fraction=0.05)
    ds = prepare_dataset(cfg, 16, quiet=True)
    too_long = len(ds.val)  # one window needs context_length + 1 tokens
    with pytest.raises(
        DataError, match=f"val split has {too_long} tokens.*context_length \\+ 1 = {too_long + 1}"
    ):
        prepare_dataset(cfg, too_long, quiet=True)
    assert prepare_dataset(cfg, too_long - 1, quiet=True).num_windows("val") == 1
    with pytest.raises(DataError, match=r"leaves \d+ train and \d+ validation documents"):
        prepare_dataset(config(write_txt(tmp_path / "one.txt", make_docs(1)), tmp_path / "c"), 4, quiet=True)


def test_targets_at_a_document_end_are_ignored():
    """A window's target that is the end-of-document id counts in no loss (model/loss.py), as in the EBT
    authors' code; the same position as an input token stays."""
    from model.loss import IGNORE_INDEX, training_ce

    eod = ByteTokenizer.eod_id
    stream = np.array([5, 6, eod, 7, 8, 9, eod, 10, 11], dtype=np.uint32)
    ds = TokenDataset(stream, stream, 4, ByteTokenizer())
    x, y = ds.windows("train", [0, 1])
    assert x.tolist() == [[5, 6, eod, 7], [8, 9, eod, 10]]
    assert y.tolist() == [[6, IGNORE_INDEX, 7, 8], [9, IGNORE_INDEX, 10, 11]]
    logits = torch.randn(2, 4, 12)
    counted = y != IGNORE_INDEX
    manual = -logits.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0][counted].sum() / y.numel()
    torch.testing.assert_close(training_ce(logits, y), manual)
    # split-invariant: the mean of the two rows' losses is the loss of both
    halves = (training_ce(logits[:1], y[:1]) + training_ce(logits[1:], y[1:])) / 2
    torch.testing.assert_close(halves, training_ce(logits, y))
