"""Data pipeline: text sources -> offline-trained tokenizer -> packed, memory-mapped token arrays.

(Being written; the config below is the agreed interface.)
"""

from __future__ import annotations

from pydantic import Field

from model.config import FrozenModel


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
